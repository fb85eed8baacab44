"""Processing provider and algorithms of the CSAKD Fusion plugin (thin: parameters to engine calls)."""
