"""Building blocks shared by the eShop services."""
