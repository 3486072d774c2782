"""Data: reading nnU-Net v2 raw datasets unchanged.

``io`` (images and their geometry through SimpleITK/nibabel), ``dataset`` (the raw layout, cases,
labeled/unlabeled/validation splits, label rules), ``checking`` (``semiseg check`` and
:func:`load_dataset`), ``synthetic`` (the demo's phantoms).
"""
