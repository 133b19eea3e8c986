"""Bundle QA, export and MONAI Label: the Model Zoo's checks, the blocks every bundle carries,
self-contained zips for another site, and what MONAI Label does with a bundle."""
