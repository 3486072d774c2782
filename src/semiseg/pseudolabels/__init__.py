"""Pseudo-labels: an ensemble labels the unlabeled scans and scores each by consensus
(``pseudolabel``, ``semiseg pseudolabel``), and a rule selects the ones a run trains on
(``selection``: ``--pseudo-labels``/``--select``). Self-training rounds that use both are a
workflow (:mod:`semiseg.workflows.selftrain`)."""
