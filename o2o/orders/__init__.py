"""Orders: placement (checkout), the state machine (lifecycle), store-side actions, expiry."""
