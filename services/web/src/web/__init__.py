"""The storefront: server-rendered pages over the catalog and basket APIs."""
