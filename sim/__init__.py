"""ZWFS simulation: Zernike aberrations, the batched ZWFS optical model, its POPPY reference."""
