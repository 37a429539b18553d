"""People: faces grouped by person, the user's names, and how sure we are.

    clustering.py     HDBSCAN over the embeddings, stable cluster numbers
    labels.py         what the user said about faces (names, "not", merges, ignores) and the
                      per-face tags derived from it
    recognition.py    `identify`: who is each face of a new photo, among the named people
    verification.py   `verify` and `eval pairs`: is it the same person, and how well we answer that
    evaluation.py     quality metrics: clustering against true identities, verification accuracy
"""
