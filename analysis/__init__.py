"""blina-study analysis layer: the study's statistics over the course and patient tables."""

__all__: list[str] = []
