"""Classical fusion methods (no training): interpolation and detail injection fitted per scene."""
