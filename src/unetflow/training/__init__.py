"""The train stage: settings, sampling, losses, schedules, resume, live logging and the trainer."""
