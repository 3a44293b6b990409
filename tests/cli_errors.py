"""What a user error looks like on the command line: one line on stderr, no traceback."""


def one_line_error(capsys, *needles) -> str:
    """The captured stderr, checked to be one line without a traceback that holds every needle."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err
    return err
