from facebatch.wording import counted


def test_counts_read_as_words():
    assert [counted(1, "part"), counted(0, "label action"), counted(2, "face")] == ["1 part", "0 label actions", "2 faces"]
    assert [counted(1, "person", "people"), counted(3, "person", "people")] == ["1 person", "3 people"]
