"""Keys, spend and budgets in a database: the store, its migrations, the spend writer."""
