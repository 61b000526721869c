"""Who is asking: users with one role each, API keys for machines, passwords and sign-in tokens for
people, and the `require(...)` dependency every route uses."""
