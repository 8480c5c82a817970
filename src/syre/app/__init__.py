"""The applications over the library: the ``syre`` command (``cli``), ``demo``, ``diagnose`` (and
``_diagnose_data``, its input reading) and the datasets (``data``).

``syre.cli``, ``syre.demo``, ``syre.diagnose`` and ``syre.data`` name these same modules.
"""
