"""Data in the CRM contract format: the sample world with known truth, and real data (CDNOW)."""
