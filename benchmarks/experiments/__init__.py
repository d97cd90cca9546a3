"""Stand-alone experiments: digits fine-tuning and the framework's measured claims."""
