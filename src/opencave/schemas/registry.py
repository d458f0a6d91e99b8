"""The annotation schema types opencave knows, by name.

Names, field names, field kinds and which fields are required follow the original
EMAnnotationSchemas, because they are part of the wire contract: tables created on the
original service keep their meaning here. The three ``derived_*`` types (whose points carry
a chunk dependency) are not supported yet.
"""

from __future__ import annotations

from ..errors import SchemaNotFound, describe_choices
from .model import Kind, SchemaField, SchemaType

B, P = Kind.BOUND_POINT, Kind.SPATIAL_POINT
S, INT, N, F, T = Kind.STRING, Kind.INTEGER, Kind.BIGINT, Kind.FLOAT, Kind.BOOLEAN
REF, USER = Kind.REFERENCE, Kind.USER_ID

_TARGET = SchemaField("target_id", REF, "annotation this references")
_PRE = SchemaField(
    "pre_pt", B, "a nearby point located in the presynaptic compartment of the synapse"
)
_POST = SchemaField(
    "post_pt", B, "a nearby point located in the postsynaptic compartment of the synapse"
)
_CTR = SchemaField("ctr_pt", P, "central point")
_SIZE = SchemaField("size", F, "size of synapse", required=False)
_TAG_PT = SchemaField("pt", B, "Location associated with the tag")
_TAG = SchemaField("tag", S, "Arbitrary text tag")
_TAG2 = SchemaField("tag2", S, "Arbitrary text tag")
_BOOL_TAG = SchemaField("tag", T, "Boolean at location")
_CLASSIFICATION = SchemaField("classification_system", S, "Classification system followed")
_CELL_TYPE = SchemaField("cell_type", S, "Cell type name")
_STATUS_CHOICES = ("non", "clean", "extended")
_VALID_ID = SchemaField(
    "valid_id", N,
    "Root id of the object when proofread status was assigned. If the pt_root_id of the cell "
    "differs, the proofreading status may not apply.",
)
_LOCATION_VALID_ID = SchemaField(
    "valid_id", N,
    "Root id of the object when location was assessed. If the pt_root_id has changed, the "
    "associated segment has undergone proofreading.",
)
_PROOF_PT = SchemaField("pt", B, "Core location on proofread object")
_SESSION = SchemaField("session", INT, "session ID of imaging")
_SCAN = SchemaField("scan_idx", INT, "index of the scan within the session")
_UNIT = SchemaField("unit_id", INT, "unique functional cell ID within the scan")
_GOSI = SchemaField("gOSI", F, "global orientation selectivity index")
_GDSI = SchemaField("gDSI", F, "global direction selectivity index")
_FUNC_PT = SchemaField("pt", B, "location of cell body of functional cell")
_HEMISPHERE = SchemaField(
    "hemisphere", S, "Cell hemisphere", choices=("L", "R", "M", "U"), default="U"
)
_USER_TAG = SchemaField("user_id", USER, "User who created the tag, auto-populated from auth.")


def _t(name: str, class_name: str, *fields: SchemaField, description: str = "") -> SchemaType:
    return SchemaType(name, class_name, tuple(fields), description)


def _f(name: str, kind: Kind, description: str = "", required: bool = True,
       choices: tuple[str | int, ...] | None = None, default: object = None) -> SchemaField:
    return SchemaField(name, kind, description, required, choices, default)


_TYPES: tuple[SchemaType, ...] = (
    _t("synapse", "SynapseSchema", _PRE, _POST, _CTR, _SIZE),
    _t("nocleft_synapse", "NoCleftSynapse", _PRE, _POST,
       _f("score", F, "synapse score (see table metadata for description of score)", False)),
    _t("nocenter_synapse", "NoCenterSynapse", _PRE, _POST, _SIZE),
    _t("fly_synapse", "BuhmannSynapseSchema", _PRE, _POST,
       _f("connection_score", F, "score assigned by Buhmann et al. 2019", False),
       _f("cleft_score", F, "score derived by Buhmann et al. 2019 by combining their synapses "
          "with the synapse segmentation from Heinrich et al. 2018", False)),
    _t("fly_nt_synapse", "BuhmannEcksteinSynapseSchema", _PRE, _POST,
       _f("connection_score", F, "score assigned by Buhmann et al. 2019", False),
       _f("cleft_score", F, "score derived by Buhmann et al. 2019 by combining their synapses "
          "with the synapse segmentation from Heinrich et al. 2018", False),
       _f("gaba", F, "Gaba probability by Eckstein et al. 2020", False),
       _f("ach", F, "Acetylcholine probability by Eckstein et al. 2020", False),
       _f("glut", F, "Glutamate probability by Eckstein et al. 2020", False),
       _f("oct", F, "Octopamine probability by Eckstein et al. 2020", False),
       _f("ser", F, "Serotonin probability by Eckstein et al. 2020", False),
       _f("da", F, "Dopamine probability by Eckstein et al. 2020", False),
       _f("valid_nt", T, "False = no neurotransmitter prediction available.", False)),
    _t("plastic_synapse", "PlasticSynapse", _PRE, _POST, _CTR, _SIZE,
       _f("plasticity", INT, "plasticity state 0:not synapse 1:normal 2:mild 3:strong 4:not rated",
          choices=(0, 1, 2, 3, 4))),
    _t("bouton_shape", "BoutonShape", _TARGET,
       _f("shape", S, "description of a bouton shape", choices=("pancake", "basmati", "potato"))),
    _t("presynaptic_bouton_type", "PresynapticBoutonType", _TARGET,
       _f("bouton_type", S, "Presynaptic type based on bouton",
          choices=("pancake", "basmati", "potato", "sst", "vertical", "vip", "ivy", "clutch",
                   "chandelier"))),
    _t("postsynaptic_compartment", "PostsynapticCompartment", _TARGET,
       _f("compartment", S, "Compartment of the postsynaptic neuron targeted by the synapse",
          choices=("soma", "dendrite", "axon")),
       _f("on_spine", T, "Boolean representing if the synapse is onto a spine or not", False),
       _f("dendrite_class", S, "Type of dendritic branch, e.g. basal or apical", False,
          choices=("basal", "apical"))),
    _t("spine_with_info", "SpineWithInfo",
       _f("pt", B, "Spatial point representing the location of the spine"),
       _f("volume", F, "Estimated volume of the spine", False),
       _f("n_inputs", INT, "Number of synaptic inputs (unique root IDs) onto the spine", False)),
    _t("microns_func_coreg", "FunctionalCoregistration", _FUNC_PT,
       _f("func_id", INT, "functional cell ID")),
    _t("microns_func_unit_coreg", "FunctionalUnitCoregistration", _FUNC_PT, _SESSION, _SCAN,
       _UNIT),
    _t("v1dd_func_unit_coreg", "V1DDFunctionalUnitCoregistration", _FUNC_PT,
       _f("column", INT, "The index of the column, a set of volumes that were vertically stacked"),
       _f("volume", INT, "index of the volume within the column"),
       _f("plane", INT, "index of imaging plane within the volume", False),
       _f("roi", INT, "index of the roi within the plane"),
       _f("residual", F, "distance between nucleus centroid and functional centroid after "
          "transformation", False),
       _f("score", F, "a confidence score associated with match", False)),
    _t("func_unit_ext_coreg", "FunctionalUnitCoregistrationExtended", _TARGET, _SESSION, _SCAN,
       _UNIT,
       _f("field", INT, "index of imaging field of cell within the scan", False),
       _f("residual", F, "distance between nucleus centroid and functional centroid after "
          "transformation", False),
       _f("score", F, "confidence score associated with match", False)),
    _t("func_properties_bcm", "FunctionalPropertiesBCM", _TARGET, _SESSION, _SCAN, _UNIT,
       _f("pref_ori", F, "preferred orientation in radians (0 - pi)"),
       _f("pref_dir", F, "preferred direction in radians (0 - 2pi)"),
       _GOSI, _GDSI,
       _f("cc_abs", F, "prediction performance of the model, higher is better")),
    _t("digital_twin_properties", "DigitalTwinPropertiesBCM", _TARGET, _SESSION, _SCAN, _UNIT,
       _f("pref_ori", F, "Preferred orientation in degrees (0 - 180)"),
       _f("pref_dir", F, "Preferred direction in degrees (0 - 360)"),
       _GOSI, _GDSI,
       _f("cc_abs", F, "Test set performance of the digital twin model unit, higher is better"),
       _f("cc_max", F, "Neuron variability score used to normalize model unit performance"),
       _f("cc_norm", F, "Normalized model unit performance, higher is better"),
       _f("OSI", F, "orientation selectivity index"),
       _f("DSI", F, "direction selectivity index"),
       _f("readout_loc_x", F, "X coordinate of the readout location"),
       _f("readout_loc_y", F, "Y coordinate of the readout location")),
    _t("simple_reference", "ReferenceAnnotation", _TARGET,
       description="a annotation that references another annotation"),
    _t("reference_tag", "ReferenceTagAnnotation",
       _f("tag", S, "tag to attach to annoation"), _TARGET,
       description="A tag attached to another annotation"),
    _t("reference_tag_float", "ReferenceTagFloat",
       _f("tag", S, "tag to attach to annoation"), _TARGET, _f("value", F, "value of the tag")),
    _t("reference_integer", "ReferenceInteger", _TARGET,
       _f("value", INT, "Integer value to be attached to the annotation"),
       description="Reference annotation with an integer value"),
    _t("reference_tag_with_confidence", "ReferenceTagWithConfidence", _TARGET,
       _f("confidence", F, "Confidence value to be attached to the annotation"),
       description="Reference annotation with a float value describing confidence in the tag"),
    _t("reference_point", "FlatSegmentationReferenceSinglePoint", _TARGET,
       _f("pt", B, "the point to be used for attaching objects to the dynamic segmentation"),
       description="Bound spatial point reference to another annotation"),
    _t("representative_point", "RepresentativePoint",
       _f("pt", B, "the point to be used for attaching objects to the dynamic segmentation"),
       description="Bound spatial point annotation"),
    _t("reference_synapse_valid", "ValidSynapse", _TARGET,
       _f("is_valid", T, "Valid annotation for synapses")),
    _t("reference_simple_group", "SimpleGroup", _TARGET, _f("group_id", INT, "group id")),
    _t("reference_simple_group_indexed", "SimpleGroupIndexed", _TARGET,
       _f("group_id", INT, "group id")),
    _t("cell_type_local", "CellTypeLocal", _CLASSIFICATION, _CELL_TYPE,
       _f("pt", B, "Location associated with classification")),
    _t("cell_type_reference", "CellTypeReference", _TARGET, _CLASSIFICATION, _CELL_TYPE),
    _t("cell_type_reference_user", "CellTypeReferenceUser", _TARGET, _CLASSIFICATION, _CELL_TYPE,
       _f("user_id", USER, "User who created the cell type classification, auto-populated "
          "from auth."),
       description="CellTypeReference schema with user tracking"),
    _t("extended_classical_cell_type", "ExtendedClassicalCellType",
       _f("pt", B, "Location in space"), _f("cell_type", S, "cell type name")),
    _t("fly_cell_type", "FlyCellType", _f("pt", B, "Location associated with classification"),
       _CELL_TYPE, _HEMISPHERE),
    _t("fly_cell_type_ext", "FlyCellTypeExt",
       _f("pt", B, "Location associated with classification"), _CELL_TYPE, _HEMISPHERE,
       _f("driver_line", S, "Driver line name", False), _f("synonym", S, "Synonym", False)),
    _t("fly_neuropil", "FlyNeuropil", _TARGET, _f("neuropil", S, "neuropil name")),
    _t("nucleus_detection", "NucleusDetection",
       _f("volume", F, "the volume of the nucleus detected in um^3", False),
       _f("pt", B, "the centroid of the nucleus, to be linked to the segmentation"),
       _f("bb_start", P, "low corner of the bounding box", False),
       _f("bb_end", P, "high corner of the bounding box", False)),
    _t("bound_tag", "BoundTagAnnotation", _TAG_PT, _TAG),
    _t("bound_double_tag", "BoundDoubleTagAnnotation", _TAG_PT, _TAG, _TAG2),
    _t("bound_2tag", "Bound2TagAnnotation", _TAG_PT, _TAG,
       _f("pt2", B, "Location associated with the tag"), _TAG2),
    _t("bound_tag_user", "BoundTagAnnotationUser", _TAG_PT, _TAG, _USER_TAG),
    _t("bound_double_tag_user", "BoundDoubleTagAnnotationUser", _TAG_PT, _TAG, _TAG2,
       _f("user_id", USER, _USER_TAG.description, False)),
    _t("bound_2tag_user", "Bound2TagAnnotationUser", _TAG_PT, _TAG,
       _f("pt2", B, "Location associated with the tag"), _TAG2, _USER_TAG),
    _t("braincircuits_annotation_user", "BrainCircuitsBoundTagAnnotationUser", _TAG_PT, _TAG,
       _USER_TAG),
    _t("bound_tag_bool", "BoundBoolAnnotation", _TAG_PT, _BOOL_TAG),
    _t("bound_tag_bool_valid", "BoundBoolWithValid", _TAG_PT, _BOOL_TAG, _LOCATION_VALID_ID),
    _t("bound_tag_valid", "BoundTagWithValid", _TAG_PT, _TAG, _LOCATION_VALID_ID),
    _t("pt_bool_valid", "SpatialPointBoolWithValid",
       _f("pt", P, "Location associated with the tag"), _BOOL_TAG,
       _f("valid_id", N, "Root id of the object when location was assessed.")),
    _t("glia_contact", "GliaContact",
       _f("glia_pt", B, "Glia-side point near a glia-object contact"),
       _f("object_pt", B, "Object-side point near a glia-object contact"),
       _f("size", F, "size of contact", False)),
    _t("contact", "Contact",
       _f("size", INT, "contact area (in units of voxel count)", False),
       _f("sidea_pt", B, "point on sidea of contact"),
       _f("sideb_pt", B, "point on sideb of contact"),
       _f("ctr_pt", P, "point on contact interface", False)),
    _t("proofread_status", "ProofreadStatus", _PROOF_PT, _VALID_ID,
       _f("status", S, "Proofread status of cell: 'non' (no comprehensive proofreading), "
          "'clean' (false merges removed) or 'extended' (neurite tips extended)",
          choices=_STATUS_CHOICES)),
    _t("compartment_proofread_status", "CompartmentProofreadStatus", _PROOF_PT, _VALID_ID,
       _f("status_dendrite", S, "Proofread status of the dendrite only",
          choices=_STATUS_CHOICES),
       _f("status_axon", S, "Proofread status of the axon only", choices=_STATUS_CHOICES)),
    _t("compartment_proofread_status_strategy", "CompartmentProofreadStatusStrategy", _PROOF_PT,
       _VALID_ID,
       _f("status_dendrite", T, "Proofread status of the dendrite only. True indicates dendrite "
          "is at least clean."),
       _f("status_axon", T, "Proofread status of the axon only. True indicates axon is at "
          "least clean."),
       _f("strategy_dendrite", S, "Strategy used when proofreading dendrite. See table "
          "description for more details."),
       _f("strategy_axon", S, "Strategy used when proofreading axon. See table description for "
          "more details.")),
    _t("proofreading_boolstatus_user", "ProofreadingBoolStatusUser", _PROOF_PT, _VALID_ID,
       _f("proofread", T, "Proofread status of cell."),
       _f("user_id", USER, "User who assessed the proofreading status, auto-populated from "
          "auth.")),
    _t("cell_match", "CellMatch",
       _f("pt", B, "Source cell identity (pt_root_id, pt_supervoxel_id, pt_position)"),
       _f("query_root_id", N, "Static root ID used for score calculation"),
       _f("match_id", S, "Unique identifier for cell from another dataset"),
       _f("score", F, "Normalised NBLAST similarity score"),
       _f("validation", T, "False if not separately validated, True if separately validated",
          False, default=False),
       description="Schema for matching cells between datasets"),
    _t("cell_similarity", "CellSimilarity",
       _f("pt", B, "Query cell identity"), _f("match_pt", B, "Target cell identity"),
       _f("query_root_id", N, "Static root ID for query cell at time of score calculation"),
       _f("match_root_id", N, "Static root ID for target cell at time of score calculation"),
       _f("score", F, "Numeric similarity score between the two cells"),
       description="Schema for cell similarity scoring between two cells"),
    _t("cell_match_reference", "CellMatchReference", _TARGET,
       _f("query_root_id", N, "Static root ID used for score calculation"),
       _f("match_id", S, "Unique identifier for cell from another dataset"),
       _f("score", F, "Normalized NBLAST similarity score"),
       _f("validation", T, "False if not validated by a human, True if validated by a human",
          False, default=False),
       description="Reference annotation version of CellMatch schema"),
)

SCHEMA_TYPES: dict[str, SchemaType] = {t.name: t for t in _TYPES}


def get_schema_type(name: str) -> SchemaType:
    """The schema type called ``name``; a 404-style error naming the known types otherwise."""
    try:
        return SCHEMA_TYPES[name]
    except KeyError:
        raise SchemaNotFound(
            f"unknown schema type {name!r}; known types: {describe_choices(SCHEMA_TYPES, 100)}",
            schema=name,
        ) from None


def schema_names() -> list[str]:
    return list(SCHEMA_TYPES)
