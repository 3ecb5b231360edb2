"""GeoTIFF orthophotos in, georeferenced masks and building polygons out (``buildings predict
--images ortho.tif``), with memory bounded whatever the raster's size.

* ``raster``     read a GeoTIFF through rasterio windows as RGB uint8: band choice, 16-bit (or float)
  rasters scaled to 8 bits by per-band percentiles measured on a decimated read;
* ``vectorize``  building polygons from mask blocks, merged across block borders (one polygon per
  building), with area and mean probability; written as GeoPackage or GeoJSON through pyogrio;
* ``predict``    the raster streamed block by block through the tiled :class:`~buildings.inference.Predictor`
  into a tiled, compressed GeoTIFF mask with the input's CRS and transform, and into the polygons;
* ``tiff``       a TIFF's header read without rasterio: its size, whether it carries GeoTIFF tags.

Needs the ``[deploy]`` extra (rasterio, shapely, pyogrio).
"""
