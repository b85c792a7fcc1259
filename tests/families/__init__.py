"""Model families defined outside the package, registered through RESNETBK_FAMILIES (tests/test_registry.py)."""
