"""Payments: payment apps, an order's payment and refunds, and the events the apps report."""
