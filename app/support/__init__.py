"""Support desk service: customers' tickets and staff replies."""
