"""STIX 2.1 views of signed records: the mapping (``mapping``), the fixed objects every
bundle shares (``common``), patterns (``patterns``) and offline verification (``verify``).

Pure functions over records already disclosed by the one decision: this package never
decides who sees what, it only re-expresses what a Search released.
"""
