"""Stop-word lists for :class:`xcops.data.SimpleTokenizer`: function words that carry no
subject, so a short title keeps its few positions for the words that do (InceptionXML's word
channels are positions)."""

from __future__ import annotations

ENGLISH = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves
""".split())

STOPWORDS = {"english": ENGLISH}


def stopword_list(name: str | None) -> frozenset[str]:
    """The named list (``"english"``), or no words for ``None``."""
    if name is None:
        return frozenset()
    if name not in STOPWORDS:
        raise ValueError(f"unknown stopword list {name!r}; known: {sorted(STOPWORDS)} or null")
    return STOPWORDS[name]
