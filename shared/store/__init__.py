"""Adapters to Azure: the only package that imports the Azure SDKs. Translates, decides nothing."""
