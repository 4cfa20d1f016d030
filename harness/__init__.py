"""Test support: hefl's services under real uvicorn, enrolled parties, hostile inputs, drivers."""
