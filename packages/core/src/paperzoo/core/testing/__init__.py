"""Test helpers shared by every paperzoo package."""
