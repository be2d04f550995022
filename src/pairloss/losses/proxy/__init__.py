"""Catalogue family B: class weights (proxies) as candidates or anchors.

One module per loss (class + functional form); :mod:`.proxy_base` holds the shared proxy front
end. The classes are exported from :mod:`pairloss.losses` and the top level.
"""
