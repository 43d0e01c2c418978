"""``/v1/products``: what prices sell."""
