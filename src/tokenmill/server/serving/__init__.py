"""Request handling between the routes and the engine: one module per endpoint family."""
