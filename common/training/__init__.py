"""Training helpers the bundle configs call: resuming from checkpoints, CPU speed options."""
