"""The Health Inequalities Strategy updates service: consent-first sign-up and theme updates."""
