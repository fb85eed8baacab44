"""Tiny fake products laid out as their specifications describe, for tests/test_products.py.

Each builder writes a product into a folder and returns the path a user
would pass, plus the values the test compares against.  Rasters are written
with plain rasterio (GeoTIFF, JPEG 2000) or GDAL's netCDF multidimensional
writer (EMIT ``.nc``; PRISMA ``.he5`` as a netCDF-4 file, which is HDF5 and
is read back with GDAL's HDF5 driver).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import rasterio
from affine import Affine

UTM32_10M = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5300040.0)
UTM33_30M = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)


def tif(path: Path, data: np.ndarray, transform: Affine, crs: str = "EPSG:32633",
        nodata: Optional[float] = None, driver: str = "GTiff", **options) -> Path:
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata, **options) as ds:
        ds.write(data)
    return path


# ----------------------------------------------------------------------------- EnMAP

ENMAP_PREFIX = "ENMAP01-____L2A-DT0000012345_20230601T101010Z_001_V010303_20230602T000000Z"
ENMAP_WAVES = (418.4, 550.2, 865.1, 1400.0, 2200.5)
ENMAP_FWHM = (7.0, 6.5, 8.1, 10.0, 9.2)
ENMAP_OFFSETS = (0.0, 0.0, 0.0, 0.0, 0.01)


def enmap_product(root: Path) -> Dict[str, object]:
    folder = root / ENMAP_PREFIX
    folder.mkdir()
    rng = np.random.default_rng(1)
    cube = rng.integers(0, 10000, size=(5, 6, 8)).astype(np.int16)
    cube[3] = -32768  # water-vapour band: nothing but nodata
    cube[:, 0, 0] = -32768  # a fill pixel
    tif(folder / f"{ENMAP_PREFIX}-SPECTRAL_IMAGE.TIF", cube, UTM33_30M, nodata=-32768)
    pixel = np.zeros((6, 8), np.uint8)
    pixel[5, 7] = 1
    cloud = np.zeros((6, 8), np.uint8)
    cloud[1, 2] = 1
    shadow = np.zeros((6, 8), np.uint8)
    shadow[2, 3] = 1
    tif(folder / f"{ENMAP_PREFIX}-QL_PIXELMASK.TIF", pixel, UTM33_30M)
    tif(folder / f"{ENMAP_PREFIX}-QL_QUALITY_CLOUD.TIF", cloud, UTM33_30M)
    tif(folder / f"{ENMAP_PREFIX}-QL_QUALITY_CLOUDSHADOW.TIF", shadow, UTM33_30M)
    entries = []
    # listed out of number order on purpose: the number attribute decides
    for number in (2, 1, 3, 4, 5):
        i = number - 1
        entries.append(
            f'      <bandID number="{number}">\n'
            f"        <wavelengthCenterOfBand>{ENMAP_WAVES[i]}</wavelengthCenterOfBand>\n"
            f"        <FWHMOfBand>{ENMAP_FWHM[i]}</FWHMOfBand>\n"
            f"        <GainOfBand>0.0001</GainOfBand>\n"
            f"        <OffsetOfBand>{ENMAP_OFFSETS[i]}</OffsetOfBand>\n"
            f"      </bandID>\n")
    (folder / f"{ENMAP_PREFIX}-METADATA.XML").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<level_X>\n  <metadata><name>EnMAP</name></metadata>\n'
        "  <specific>\n    <bandCharacterisation>\n" + "".join(entries)
        + "    </bandCharacterisation>\n  </specific>\n</level_X>\n")
    return {"folder": folder, "cube": cube, "pixel": pixel, "cloud": cloud, "shadow": shadow}


# ----------------------------------------------------------------------------- Sentinel-2

S2_SAFE = "S2B_MSIL2A_20230601T101559_N0509_R065_T32UQD_20230601T120000.SAFE"
S2_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
S2_XML_CENTRAL = {"B2": 492.3, "B3": 559.1, "B4": 665.2, "B8": 833.1}


def s2_metadata(spectral_information: bool, add_offset: bool = True) -> str:
    ids = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13) if add_offset)
    spectral = ""
    if spectral_information:
        spectral = "<Spectral_Information_List>" + "".join(
            f'<Spectral_Information bandId="{i}" physicalBand="{name}"><RESOLUTION>10</RESOLUTION>'
            f'<Wavelength><MIN unit="nm">400</MIN><MAX unit="nm">900</MAX>'
            f'<CENTRAL unit="nm">{S2_XML_CENTRAL[name]}</CENTRAL></Wavelength></Spectral_Information>'
            for i, name in enumerate(ids) if name in S2_XML_CENTRAL) + "</Spectral_Information_List>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-2A_User_Product xmlns:n1="{S2_NAMESPACE}">'
        "<n1:General_Info><Product_Info><PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>"
        "<Datatake><SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME></Datatake></Product_Info>"
        "<Product_Image_Characteristics><Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>"
        "<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>"
        "<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000</BOA_QUANTIFICATION_VALUE>"
        "<AOT_QUANTIFICATION_VALUE>1000.0</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>"
        + (f"<BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>" if add_offset else "")
        + f"{spectral}"
        "</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>\n")


def s2_product(root: Path, spectral_information: bool = True, add_offset: bool = True) -> Dict[str, object]:
    safe = root / S2_SAFE
    granule = safe / "GRANULE" / "L2A_T32UQD_A032000_20230601T101600" / "IMG_DATA"
    (granule / "R10m").mkdir(parents=True)
    (granule / "R20m").mkdir()
    rng = np.random.default_rng(2)
    bands = {}
    for name in ("B02", "B03", "B04", "B08"):
        data = rng.integers(1, 12000, size=(8, 8)).astype(np.uint16)
        data[7, :] = 0  # nodata row
        bands[name] = data
        tif(granule / "R10m" / f"T32UQD_20230601T101559_{name}_10m.jp2", data, UTM32_10M, crs="EPSG:32632",
            driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    scl = np.array([[4, 4, 8, 4], [9, 5, 4, 3], [4, 10, 11, 6], [0, 1, 2, 7]], np.uint8)
    tif(granule / "R20m" / "T32UQD_20230601T101559_SCL_20m.jp2", scl,
        Affine(20.0, 0.0, 600000.0, 0.0, -20.0, 5300040.0), crs="EPSG:32632", driver="JP2OpenJPEG",
        QUALITY=100, REVERSIBLE="YES")
    (safe / "MTD_MSIL2A.xml").write_text(s2_metadata(spectral_information, add_offset))
    return {"safe": safe, "bands": bands, "scl": scl}


def zip_folder(folder: Path, target: Path) -> Path:
    return Path(shutil.make_archive(str(target), "zip", root_dir=folder.parent, base_dir=folder.name))


# ----------------------------------------------------------------------------- Landsat

LANDSAT_ID = "LC09_L2SP_192023_20230601_20230603_02_T1"


def landsat_mtl(scene: str = LANDSAT_ID, spacecraft: str = "LANDSAT_9", level2: bool = True) -> str:
    files = "".join(f'    FILE_NAME_BAND_{n} = "{scene}_SR_B{n}.TIF"\n' for n in range(1, 8))
    lines = [
        "GROUP = LANDSAT_METADATA_FILE",
        "  GROUP = PRODUCT_CONTENTS",
        '    LANDSAT_PRODUCT_ID = "' + scene + '"',
        '    PROCESSING_LEVEL = "L2SP"',
        files.rstrip("\n"),
        f'    FILE_NAME_QUALITY_L1_PIXEL = "{scene}_QA_PIXEL.TIF"',
        "  END_GROUP = PRODUCT_CONTENTS",
        "  GROUP = IMAGE_ATTRIBUTES",
        f'    SPACECRAFT_ID = "{spacecraft}"',
        '    SENSOR_ID = "OLI_TIRS"',
        "  END_GROUP = IMAGE_ATTRIBUTES",
    ]
    if level2:
        lines.append("  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS")
        for n in range(1, 8):
            lines += [f"    REFLECTANCE_MAXIMUM_BAND_{n} = 1.602213", f"    REFLECTANCE_MINIMUM_BAND_{n} = -0.199972",
                      f"    REFLECTANCE_MULT_BAND_{n} = 2.75E-05", f"    REFLECTANCE_ADD_BAND_{n} = -0.200000"]
        lines.append("  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS")
    lines.append("  GROUP = LEVEL1_RADIOMETRIC_RESCALING")
    for n in range(1, 8):
        lines += [f"    REFLECTANCE_MULT_BAND_{n} = 2.0000E-05", f"    REFLECTANCE_ADD_BAND_{n} = -0.100000"]
    lines += ["  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING", "END_GROUP = LANDSAT_METADATA_FILE", "END"]
    return "\n".join(lines) + "\n"


def landsat_product(root: Path, **mtl) -> Dict[str, object]:
    folder = root / LANDSAT_ID
    folder.mkdir()
    rng = np.random.default_rng(3)
    bands = {}
    for n in range(1, 8):
        data = rng.integers(7273, 43636, size=(5, 6)).astype(np.uint16)
        data[0, :2] = 0
        bands[n] = data
        tif(folder / f"{LANDSAT_ID}_SR_B{n}.TIF", data, UTM33_30M, nodata=0)
    qa = np.full((5, 6), 21824, np.uint16)  # clear, low confidences
    qa[0, :2] = 1  # fill
    qa[1, 1] = 21824 | (1 << 3)  # cloud
    qa[2, 2] = 21824 | (1 << 4)  # cloud shadow
    qa[3, 3] = 21824 | (1 << 5)  # snow
    qa[4, 4] = 21824 | (1 << 2)  # cirrus
    qa[4, 5] = 21824 | (1 << 7)  # water: kept
    tif(folder / f"{LANDSAT_ID}_QA_PIXEL.TIF", qa, UTM33_30M, nodata=1)
    (folder / f"{LANDSAT_ID}_MTL.txt").write_text(landsat_mtl(**mtl))
    return {"folder": folder, "mtl": folder / f"{LANDSAT_ID}_MTL.txt", "bands": bands, "qa": qa}


# ----------------------------------------------------------------------------- PRISMA and EMIT (GDAL netCDF writer)


def _gdal():
    from osgeo import gdal

    return gdal


def _attribute(group, name: str, value) -> None:
    gdal = _gdal()
    if isinstance(value, str):
        group.CreateAttribute(name, [], gdal.ExtendedDataType.CreateString()).Write(value)
        return
    values = np.atleast_1d(np.asarray(value))
    kind = gdal.GDT_Float64 if values.dtype.kind == "f" else gdal.GDT_Int32
    shape = [] if np.ndim(value) == 0 else [len(values)]
    attribute = group.CreateAttribute(name, shape, gdal.ExtendedDataType.Create(kind))
    attribute.Write(float(value) if kind == gdal.GDT_Float64 and not shape else
                    int(value) if not shape else values.tolist())


def _variable(group, name: str, dims, data: np.ndarray, gdal_type, fill: Optional[float] = None):
    gdal = _gdal()
    array = group.CreateMDArray(name, dims, gdal.ExtendedDataType.Create(gdal_type))
    if fill is not None:
        array.SetNoDataValueDouble(fill)
    array.Write(np.ascontiguousarray(data))
    return array


PRISMA_NAME = "PRS_L2D_STD_20230601101010_20230601101014_0001.he5"
#: Stored (rows, bands, cols); the VNIR list descends and holds one unused (0) band.
PRISMA_VNIR_WAVES = (980.0, 0.0, 410.0)
PRISMA_SWIR_WAVES = (2400.0, 950.0, 1200.0)


def prisma_product(root: Path, dead_band: bool = False) -> Dict[str, object]:
    gdal = _gdal()
    path = root / PRISMA_NAME
    rng = np.random.default_rng(4)
    vnir = rng.integers(2, 65535, size=(4, 3, 5)).astype(np.uint16)
    swir = rng.integers(2, 65535, size=(4, 3, 5)).astype(np.uint16)
    vnir[0, :, 0] = 0  # fill pixel (row 0, col 0) in every band
    swir[0, :, 0] = 0
    vnir[1, 0, 1] = 0  # a real zero inside the scene
    if dead_band:
        swir[:, 1, :] = 0  # the 950 nm band holds nothing
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path), [], ["FORMAT=NC4"])
    top = ds.GetRootGroup()
    for name, value in (("List_Cw_Vnir", PRISMA_VNIR_WAVES), ("List_Fwhm_Vnir", (12.0, 0.0, 11.0)),
                        ("List_Cw_Swir", PRISMA_SWIR_WAVES), ("List_Fwhm_Swir", (9.0, 13.0, 10.0)),
                        ("L2ScaleVnirMin", 0.0), ("L2ScaleVnirMax", 1.0), ("L2ScaleSwirMin", -0.1),
                        ("L2ScaleSwirMax", 0.9), ("Epsg_Code", 32633), ("Product_ULcorner_easting", 366015.0),
                        ("Product_ULcorner_northing", 5809985.0)):
        _attribute(top, name, value)
    fields = top.CreateGroup("HDFEOS").CreateGroup("SWATHS").CreateGroup("PRS_L2D_HCO").CreateGroup("Data Fields")
    rows, cols = fields.CreateDimension("rows", None, None, 4), fields.CreateDimension("cols", None, None, 5)
    for name, cube in (("VNIR_Cube", vnir), ("SWIR_Cube", swir)):
        bands = fields.CreateDimension(f"{name}_bands", None, None, 3)
        _variable(fields, name, [rows, bands, cols], cube, gdal.GDT_UInt16)
    del fields, top, ds
    return {"path": path, "vnir": vnir, "swir": swir}


EMIT_NAME = "EMIT_L2A_RFL_001_20230601T101010_2315207_002.nc"
EMIT_WAVES = (381.0, 1400.0, 2493.0)
EMIT_GEOTRANSFORM = (10.5, 0.0005, 0.0, 45.2, 0.0, -0.0005)


def emit_product(root: Path, with_mask: bool = True) -> Dict[str, object]:
    gdal = _gdal()
    rng = np.random.default_rng(5)
    swath = rng.uniform(0.0, 0.6, size=(3, 4, 3)).astype(np.float32)
    # map grid 5 x 6; glt 1-based (x = crosstrack, y = downtrack), 0 = no pixel
    glt_x = np.zeros((5, 6), np.int32)
    glt_y = np.zeros((5, 6), np.int32)
    for r in range(5):
        for c in range(6):
            if 1 <= c <= 4 and r <= 2:
                glt_x[r, c], glt_y[r, c] = 5 - c, r + 1  # mirrored crosstrack, as a swath can be
    glt_x[4, 0], glt_y[4, 0] = 1, 3
    wkt = rasterio.crs.CRS.from_epsg(4326).to_wkt()
    files = {"RFL": root / EMIT_NAME, "MASK": root / EMIT_NAME.replace("_RFL_", "_MASK_")}
    mask = np.zeros((3, 4, 8), np.float32)
    mask[1, 2, 7] = 1  # aggregate flag
    mask[2, 0, 0] = 1  # cloud flag only: aggregate decides
    for kind, path in files.items():
        if kind == "MASK" and not with_mask:
            continue
        ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path), [], ["FORMAT=NC4"])
        top = ds.GetRootGroup()
        _attribute(top, "geotransform", EMIT_GEOTRANSFORM)
        _attribute(top, "spatial_ref", wkt)
        down = top.CreateDimension("downtrack", None, None, 3)
        across = top.CreateDimension("crosstrack", None, None, 4)
        parameters = top.CreateGroup("sensor_band_parameters")
        location = top.CreateGroup("location")
        ortho = [location.CreateDimension("ortho_y", None, None, 5), location.CreateDimension("ortho_x", None, None, 6)]
        _variable(location, "glt_x", ortho, glt_x, gdal.GDT_Int32)
        _variable(location, "glt_y", ortho, glt_y, gdal.GDT_Int32)
        if kind == "RFL":
            bands = top.CreateDimension("bands", None, None, 3)
            _variable(top, "reflectance", [down, across, bands], swath, gdal.GDT_Float32, fill=-9999.0)
            pb = parameters.CreateDimension("bands", None, None, 3)
            _variable(parameters, "wavelengths", [pb], np.array(EMIT_WAVES, np.float32), gdal.GDT_Float32)
            _variable(parameters, "fwhm", [pb], np.array((8.5, 8.6, 8.7), np.float32), gdal.GDT_Float32)
            _variable(parameters, "good_wavelengths", [pb], np.array((1, 0, 1), np.uint8), gdal.GDT_Byte)
        else:
            bands = top.CreateDimension("bands", None, None, 8)
            _variable(top, "mask", [down, across, bands], mask, gdal.GDT_Float32, fill=-9999.0)
            names = parameters.CreateMDArray("mask_bands", [parameters.CreateDimension("bands", None, None, 8)],
                                             gdal.ExtendedDataType.CreateString())
            names.Write(["Cloud flag", "Cirrus flag", "Water flag", "Spacecraft Flag", "Dilated Cloud Flag",
                         "AOD550", "H2O (g cm-2)", "Aggregate Flag"])
            del names
        del parameters, location, top, ds
    return {"path": files["RFL"], "swath": swath, "glt_x": glt_x, "glt_y": glt_y, "mask": mask}
