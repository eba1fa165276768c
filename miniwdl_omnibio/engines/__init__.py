"""One module per execution engine; each translates a TaskAttempt and nothing else."""
