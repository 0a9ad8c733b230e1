"""Data shape: the CRM contract, validation, the store and (later) point-in-time feature pipelines."""
