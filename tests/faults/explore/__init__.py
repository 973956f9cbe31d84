"""The fault explorer: seeded random schedules of faults against real processes."""
