"""Who may do what: signed tokens for users, services and operators."""
