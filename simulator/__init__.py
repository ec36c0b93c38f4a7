"""The market simulator: synthetic trading days (``market``), history files (``history``), original timing
(``pacing``) and publishing to the raw topics (``replay``). ``ticklake replay`` and the load tests both use it;
it depends on ``schemas`` only.
"""
