"""Data sources, image I/O and made sets (see ``bench.data.sources.open_source``)."""

from bench.data.images import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    check_images,
    decode_image,
    from_uint8,
    list_image_files,
    load_image,
    save_image,
    to_uint8,
)
from bench.data.sets import SetRecord, existing_ids, read_set, safe_name, write_set
from bench.data.sources import (
    Item,
    Source,
    available_kinds,
    item_seed,
    open_source,
    parse_source_spec,
    register_source,
    select_subset,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "Item",
    "SetRecord",
    "Source",
    "available_kinds",
    "check_images",
    "decode_image",
    "existing_ids",
    "from_uint8",
    "item_seed",
    "list_image_files",
    "load_image",
    "open_source",
    "parse_source_spec",
    "read_set",
    "register_source",
    "safe_name",
    "save_image",
    "select_subset",
    "to_uint8",
    "write_set",
]
