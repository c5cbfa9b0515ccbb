"""One pass of the stages and what a run folder holds: stages (run_pass, the one order), run_folder (lock, names,
RunInfo, versions), per_domain (groups through run_pass), tracking (W&B), predict and export (a trained folder
put to use), routing (the base model choosing a domain group)."""
