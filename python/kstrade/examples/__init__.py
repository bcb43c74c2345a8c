"""Runnable examples of extending kstrade from outside (README, "Your own stage")."""
