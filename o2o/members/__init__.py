"""Members: points for what patients spend, levels by 12-month spend, and the level's benefits."""
