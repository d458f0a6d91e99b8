"""opencave: a self-hostable Connectome Annotation Versioning Engine.

The unmodified ``caveclient`` talks to an opencave server exactly as it talks to the
original CAVE deployment. See DESIGN.md for the architecture.
"""

__version__ = "0.1.0"
