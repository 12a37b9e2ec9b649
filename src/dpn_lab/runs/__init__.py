"""What every command shares around a run: the task wrapper, instantiation, result.json, resuming, sweep
summaries, W&B set-up and the config resolvers."""
