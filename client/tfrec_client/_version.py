"""Version of tfrec-client, kept equal to tfrec's (tests/client/test_packaging.py checks).

The client builds from client/ alone (``pip install ./client``, or a wheel built
from its sdist), so it cannot read ``tfrec/_version.py`` outside that folder.
"""

__version__ = "0.1.0"
