"""File formats of the contests: RLE text (:mod:`.rle`), ``name<TAB>rle`` submission files and the
contest score (:mod:`.submission`), label-map PNGs and ``result.zip`` (:mod:`.label_maps`), and
one reader of images, image folders and zips (:mod:`.images`)."""
