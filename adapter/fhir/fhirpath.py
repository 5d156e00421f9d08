"""A FHIRPath subset compiled once into Python closures, evaluated over plain JSON (dict/list).

Grain: an expression maps an input *collection* (a Python ``list`` of JSON items: ``dict`` for
complex elements and resources, ``str``/``int``/``float``/``bool`` for primitives) to an output
collection (a new ``list``). Input lists are never mutated; callers must not mutate results either.

What is covered (the SQL-on-FHIR v2 subset plus what study mappings need):

* navigation with implicit flattening of lists, a leading resource-type filter (``Patient.name``),
  choice elements (``value.ofType(Quantity)`` reads ``valueQuantity``; bare ``value`` finds the one
  ``value[x]`` key present), indexers ``[n]``;
* literals: strings, integers, decimals, booleans, ``{}``, ``@date``/``@dateTime``/``@Ttime``;
* ``%constants`` (bound at compile time), ``%resource``/``%rootResource``/``%context``,
  ``%rowIndex``, ``%ucum``/``%sct``/``%loinc``; ``$this``;
* operators ``. [] unary- * / div mod + - & is as | < > <= >= = != ~ !~ in contains and xor or
  implies`` with FHIRPath empty-propagation and three-valued logic;
* functions: see ``SUPPORTED_FUNCTIONS``.

Temporal values read from JSON stay ``str``; literals, typed constants and ``ofType(date|dateTime|
instant|time)`` produce ``FhirDate``/``FhirDateTime``/``FhirTime`` (``str`` subclasses) so that
``=``/``<`` compare them as FHIRPath temporals (precision-aware, time-zone normalised).
Two plain strings that both look like ISO dates are compared as temporals as well.

Anything outside the subset raises ``FhirPathError`` at compile time, naming the expression.
Data-dependent failures (e.g. ``<`` on a 2-item collection) raise ``FhirPathEvaluationError``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "CompiledPath",
    "Env",
    "FhirDate",
    "FhirDateTime",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirTime",
    "NOT_SCALAR",
    "FHIR_COMPLEX_TYPES",
    "FHIR_PRIMITIVE_TYPES",
    "FHIR_RESOURCE_TYPES",
    "SUPPORTED_FUNCTIONS",
    "compile_path",
    "plain_value",
]


class FhirPathError(ValueError):
    """An expression is malformed or uses a construct outside the supported subset."""


class FhirPathEvaluationError(FhirPathError):
    """An expression failed on a particular input (e.g. a singleton was expected)."""


class FhirDate(str):
    """A FHIR ``date`` value (``YYYY[-MM[-DD]]``) known to be temporal."""

    __slots__ = ()


class FhirDateTime(str):
    """A FHIR ``dateTime``/``instant`` value known to be temporal."""

    __slots__ = ()


class FhirTime(str):
    """A FHIR ``time`` value (``hh:mm[:ss[.fff]]``) known to be temporal."""

    __slots__ = ()


_TEMPORAL_TYPES = (FhirDate, FhirDateTime, FhirTime)
_TEMPORAL_CLASSES = frozenset(_TEMPORAL_TYPES)


def plain_value(value: Any) -> Any:
    """Return ``value`` with typed temporal ``str`` subclasses turned into plain ``str``."""
    if value.__class__ in _TEMPORAL_CLASSES:
        return str.__str__(value)
    return value


# --------------------------------------------------------------------------------------------
# FHIR R4 type vocabulary (facts from the FHIR R4 / R4B specifications).

FHIR_PRIMITIVE_TYPES: frozenset[str] = frozenset(
    "base64Binary boolean canonical code date dateTime decimal id instant integer integer64 "
    "markdown oid positiveInt string time unsignedInt uri url uuid xhtml".split()
)

FHIR_COMPLEX_TYPES: frozenset[str] = frozenset(
    "Address Age Annotation Attachment BackboneElement CodeableConcept CodeableReference Coding "
    "ContactDetail ContactPoint Contributor Count DataRequirement Distance Dosage Duration "
    "Element ElementDefinition Expression Extension HumanName Identifier MarketingStatus Meta "
    "Money MoneyQuantity Narrative ParameterDefinition Period Population ProdCharacteristic "
    "ProductShelfLife Quantity Range Ratio RatioRange Reference RelatedArtifact SampledData "
    "Signature SimpleQuantity SubstanceAmount Timing TriggerDefinition UsageContext".split()
)

# R4B resource types plus the R4 (4.0.1) ones that R4B dropped.
FHIR_RESOURCE_TYPES: frozenset[str] = frozenset(
    """Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap
    Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
    DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint
    EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceReport
    EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide Ingredient
    InsurancePlan Invoice Library Linkage List Location ManufacturedItemDefinition Measure
    MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductDefinition
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence
    NamingSystem NutritionOrder NutritionProduct Observation ObservationDefinition
    OperationDefinition OperationOutcome Organization OrganizationAffiliation
    PackagedProductDefinition Parameters Patient PaymentNotice PaymentReconciliation Person
    PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire
    QuestionnaireResponse RegulatedAuthorization RelatedPerson RequestGroup ResearchDefinition
    ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription SubscriptionStatus
    SubscriptionTopic Substance SubstanceDefinition SubstanceNucleicAcid SubstancePolymer
    SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
    TestScript ValueSet VerificationResult VisionPrescription""".split()
)

# Base names of R4/R4B choice elements (``value[x]``, ``effective[x]``...): only for these does a
# bare navigation step look for a ``<name><Type>`` key when ``<name>`` itself is absent.
_CHOICE_BASES: frozenset[str] = frozenset(
    """abatement additive age allowed amount answer asNeeded author born bounds characteristic
    chargeItem citeAs code collected concentration content created date deceased defaultValue
    definition detail diagnosis dose doseNumber due duration effective entity event example
    fastingStatus fixed identified indication item legallyBinding location manufacturer maxValue
    medication minValue minimumVolume module multipleBirth name occurred occurrence offset onset
    participantEffective pattern performed period presentation probability procedure product
    quantity rate reported scheduled seriesDoses serviced source start statusReason strength
    studyEffective subject substance substanceDefinition target time timing topic used value
    when""".split()
)


def _cap(type_name: str) -> str:
    return type_name[:1].upper() + type_name[1:]


_CHOICE_SUFFIXES: frozenset[str] = frozenset(_cap(t) for t in FHIR_PRIMITIVE_TYPES | FHIR_COMPLEX_TYPES)

# FHIRPath System types accepted as type specifiers, mapped to the FHIR primitive they test.
_SYSTEM_TYPES = {
    "Boolean": "boolean",
    "String": "string",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
    "Quantity": "Quantity",
}

_STRING_TYPES = frozenset("string code id uri url canonical oid uuid markdown base64Binary xhtml".split())
_INTEGER_TYPES = frozenset("integer positiveInt unsignedInt integer64".split())
_TEMPORAL_WRAP: dict[str, type[str]] = {
    "date": FhirDate,
    "dateTime": FhirDateTime,
    "instant": FhirDateTime,
    "time": FhirTime,
}

# --------------------------------------------------------------------------------------------
# Temporal parsing and comparison.

_DATETIME_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"(?:T(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?(Z|[+-]\d{2}:\d{2})?)?"
)
_TIME_RE = re.compile(r"T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")
_LOOKS_DATE_RE = re.compile(r"\d{4}-\d{2}(?:-\d{2}(?:T[\d:.+\-Z]*)?)?")


def _parse_datetime(text: str) -> tuple[list[float], int] | None:
    """Components ``[Y, M, D, h, m, s.fff]`` (time-zone normalised to UTC) and precision 1..6."""
    m = _DATETIME_RE.fullmatch(text)
    if m is None:
        return None
    parts = m.groups()
    values: list[float] = []
    for g in parts[:6]:
        if g is None:
            break
        values.append(int(g))
    if parts[6] is not None and len(values) == 6:
        values[5] = values[5] + float("0." + parts[6])
    precision = len(values)
    tz = parts[7]
    if precision >= 4 and tz is not None and tz != "Z" and tz not in ("+00:00", "-00:00"):
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 60 + int(tz[4:6]))
        full = [int(v) for v in values[:5]] + [0] * (5 - min(5, len(values)))
        moment = _dt.datetime(full[0], full[1], full[2], full[3], full[4])
        moment -= _dt.timedelta(minutes=offset)
        shifted = [moment.year, moment.month, moment.day, moment.hour, moment.minute]
        values = [float(v) for v in shifted[:precision]] + values[5:precision]
    return values, precision


def _parse_time(text: str) -> tuple[list[float], int] | None:
    m = _TIME_RE.fullmatch(text)
    if m is None:
        return None
    values: list[float] = []
    for g in m.groups()[:3]:
        if g is None:
            break
        values.append(int(g))
    if m.group(4) is not None and len(values) == 3:
        values[2] = values[2] + float("0." + m.group(4))
    return values, len(values)


def _temporal_cmp(a: str, b: str) -> int | None:
    """-1/0/1, or None when the precisions differ and the common part is equal (or unparsable)."""
    if a.__class__ is FhirTime or b.__class__ is FhirTime:
        pa, pb = _parse_time(a), _parse_time(b)
    else:
        pa, pb = _parse_datetime(a), _parse_datetime(b)
    if pa is None or pb is None:
        return None
    va, na = pa
    vb, nb = pb
    # Seconds and fractions are one precision in FHIRPath; everything else must match.
    for x, y in zip(va, vb, strict=False):
        if x != y:
            return -1 if x < y else 1
    if na != nb:
        return None
    return 0


def _is_temporal_pair(a: str, b: str) -> bool:
    if a.__class__ in _TEMPORAL_CLASSES or b.__class__ in _TEMPORAL_CLASSES:
        return True
    return _LOOKS_DATE_RE.fullmatch(a) is not None and _LOOKS_DATE_RE.fullmatch(b) is not None


# --------------------------------------------------------------------------------------------
# Evaluation environment.


class Env:
    """Per-evaluation variables: ``%resource`` and the current ``%rowIndex``."""

    __slots__ = ("resource", "row_index")

    def __init__(self, resource: Any = None, row_index: int = 0) -> None:
        self.resource = resource
        self.row_index = row_index


Fn = Callable[[list, Env], list]


NOT_SCALAR: Any = object()
"""Returned by ``CompiledPath.scalar`` when the general evaluator must decide."""

Scalar = Callable[[Any], Any]


class CompiledPath:
    """A compiled expression: call it with ``(focus_collection, env)`` to get a new ``list``.

    ``scalar`` (or None) is a fast path for the commonest shape, a chain of single-valued
    element lookups on one focus item: it returns the value, None for empty, or ``NOT_SCALAR``
    when it meets a list or anything else it cannot decide (then call the general evaluator).
    """

    __slots__ = ("expression", "_fn", "scalar")

    def __init__(self, expression: str, fn: Fn, scalar: Scalar | None = None) -> None:
        self.expression = expression
        self._fn = fn
        self.scalar = scalar

    def __call__(self, focus: list, env: Env) -> list:
        return self._fn(focus, env)

    @property
    def fn(self) -> Fn:
        """The raw closure ``(focus, env) -> list`` (skips one call layer in hot loops)."""
        return self._fn

    def evaluate(self, resource: Any, *, row_index: int = 0) -> list:
        """Evaluate with ``resource`` as both the focus and ``%resource``."""
        return self._fn([resource], Env(resource, row_index))

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"


# --------------------------------------------------------------------------------------------
# Tokenizer.

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<datetime>@\d{4}(?:-\d{2}(?:-\d{2})?)?
        (?:T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)
  | (?P<time>@T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)
  | (?P<num>\d+(?:\.\d+)?L?)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<qid>`(?:[^`\\]|\\.)*`)
  | (?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(body: str, expression: str) -> str:
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise FhirPathError(f"invalid escape '\\{nxt}' in FHIRPath {expression!r}")
    return "".join(out)


class _Tok:
    __slots__ = ("kind", "text", "value", "pos")

    def __init__(self, kind: str, text: str, value: Any, pos: int) -> None:
        self.kind = kind
        self.text = text
        self.value = value
        self.pos = pos


def _tokenize(expression: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    n = len(expression)
    while pos < n:
        m = _TOKEN_RE.match(expression, pos)
        if m is None:
            raise FhirPathError(
                f"unexpected character {expression[pos]!r} at position {pos} in FHIRPath {expression!r}"
            )
        kind = m.lastgroup or ""
        text = m.group()
        if kind != "ws":
            value: Any = text
            if kind == "str":
                value = _unescape(text[1:-1], expression)
            elif kind == "qid":
                value = _unescape(text[1:-1], expression)
            elif kind == "var":
                body = text[1:]
                value = _unescape(body[1:-1], expression) if body[0] in "`'" else body
            elif kind == "num":
                if text.endswith("L"):
                    value = int(text[:-1])
                elif "." in text:
                    value = float(text)
                else:
                    value = int(text)
            elif kind == "datetime":
                body = text[1:]
                value = FhirDateTime(body) if "T" in body else FhirDate(body)
            elif kind == "time":
                value = FhirTime(text[2:])
            toks.append(_Tok(kind, text, value, pos))
        pos = m.end()
    toks.append(_Tok("eof", "", None, n))
    return toks


# --------------------------------------------------------------------------------------------
# Parser (Pratt). AST nodes are tuples: (kind, ...).

_BINARY_PREC = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "is": 8,
    "as": 8,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}
_KEYWORD_OPS = frozenset(k for k in _BINARY_PREC if k.isalpha())
_CALENDAR_UNITS = frozenset(
    "year years month months week weeks day days hour hours minute minutes second seconds "
    "millisecond milliseconds".split()
)


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.toks = _tokenize(expression)
        self.i = 0

    def error(self, message: str, tok: _Tok | None = None) -> FhirPathError:
        tok = tok or self.toks[self.i]
        where = "end of expression" if tok.kind == "eof" else f"position {tok.pos}"
        return FhirPathError(f"{message} at {where} in FHIRPath {self.expression!r}")

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect_op(self, text: str) -> None:
        tok = self.next()
        if tok.kind != "op" or tok.text != text:
            raise self.error(f"expected {text!r}", tok)

    def parse(self) -> tuple:
        if self.peek().kind == "eof":
            raise self.error("empty expression")
        node = self.expr(0)
        if self.peek().kind != "eof":
            raise self.error(f"unexpected {self.peek().text!r}")
        return node

    def infix_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _BINARY_PREC:
            return tok.text
        if tok.kind == "id" and tok.text in _KEYWORD_OPS:
            return tok.text
        return None

    def expr(self, min_prec: int) -> tuple:
        left = self.unary()
        while True:
            op = self.infix_op()
            if op is None:
                break
            prec = _BINARY_PREC[op]
            if prec < min_prec:
                break
            self.next()
            if op in ("is", "as"):
                left = (op, left, self.type_spec())
            else:
                left = ("bin", op, left, self.expr(prec + 1))
        return left

    def type_spec(self) -> str:
        tok = self.next()
        if tok.kind not in ("id", "qid"):
            raise self.error("expected a type name", tok)
        name = tok.value
        if (
            self.peek().kind == "op"
            and self.peek().text == "."
            and self.peek(1).kind
            in (
                "id",
                "qid",
            )
        ):
            self.next()
            name = f"{name}.{self.next().value}"
        return name

    def unary(self) -> tuple:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("+", "-"):
            self.next()
            operand = self.unary()
            return ("neg", operand) if tok.text == "-" else operand
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.term()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text == ".":
                self.next()
                name_tok = self.next()
                if name_tok.kind not in ("id", "qid"):
                    raise self.error("expected a name after '.'", name_tok)
                if name_tok.kind == "id" and self.peek().kind == "op" and self.peek().text == "(":
                    node = ("call", node, name_tok.value, self.args())
                else:
                    node = ("member", node, name_tok.value)
            elif tok.kind == "op" and tok.text == "[":
                self.next()
                index = self.expr(0)
                self.expect_op("]")
                node = ("index", node, index)
            else:
                return node

    def args(self) -> list[tuple]:
        self.expect_op("(")
        out: list[tuple] = []
        if self.peek().kind == "op" and self.peek().text == ")":
            self.next()
            return out
        while True:
            out.append(self.expr(0))
            tok = self.next()
            if tok.kind == "op" and tok.text == ")":
                return out
            if not (tok.kind == "op" and tok.text == ","):
                raise self.error("expected ',' or ')'", tok)

    def term(self) -> tuple:
        tok = self.next()
        kind = tok.kind
        if kind == "op":
            if tok.text == "(":
                node = self.expr(0)
                self.expect_op(")")
                return node
            if tok.text == "{":
                self.expect_op("}")
                return ("empty",)
            raise self.error(f"unexpected {tok.text!r}", tok)
        if kind == "num":
            nxt = self.peek()
            if nxt.kind == "str" or (nxt.kind == "id" and nxt.text in _CALENDAR_UNITS):
                raise self.error("quantity literals are not supported", nxt)
            return ("lit", tok.value)
        if kind in ("str", "datetime", "time"):
            return ("lit", tok.value)
        if kind == "var":
            return ("var", tok.value)
        if kind == "special":
            if tok.text == "$this":
                return ("this",)
            raise self.error(f"{tok.text} is not supported", tok)
        if kind == "qid":
            return ("ident", tok.value)
        if kind == "id":
            if tok.text in ("true", "false"):
                return ("lit", tok.text == "true")
            if self.peek().kind == "op" and self.peek().text == "(":
                return ("call", None, tok.value, self.args())
            return ("ident", tok.value)
        if kind == "eof":
            raise self.error("unexpected end of expression", tok)
        raise self.error(f"unexpected {tok.text!r}", tok)


# --------------------------------------------------------------------------------------------
# Runtime helpers.


def _as_bool(coll: list, what: str) -> bool | None:
    """FHIRPath singleton evaluation for a boolean context."""
    if not coll:
        return None
    if len(coll) == 1:
        v = coll[0]
        return v if v.__class__ is bool else True
    raise FhirPathEvaluationError(f"{what} expects a single boolean, got {len(coll)} items")


def _single(coll: list, what: str) -> Any:
    if len(coll) == 1:
        return coll[0]
    if not coll:
        return None
    raise FhirPathEvaluationError(f"{what} expects a single item, got {len(coll)} items")


def _is_number(v: Any) -> bool:
    c = v.__class__
    return c is int or c is float or (isinstance(v, (int, float)) and c is not bool)


def _items_equal(a: Any, b: Any) -> bool | None:
    ca, cb = a.__class__, b.__class__
    if ca is bool or cb is bool:
        return ca is cb and a == b
    if isinstance(a, str) and isinstance(b, str):
        if ca in _TEMPORAL_CLASSES or cb in _TEMPORAL_CLASSES:
            if a == b:
                return True
            c = _temporal_cmp(a, b)
            return None if c is None else c == 0
        return a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if ca is cb or (isinstance(a, dict) and isinstance(b, dict)):
        return a == b
    return False


def _coll_equal(left: list, right: list) -> list:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    result = True
    for a, b in zip(left, right, strict=True):
        r = _items_equal(a, b)
        if r is None:
            return []
        if not r:
            result = False
    return [result]


def _normalise_text(s: str) -> str:
    return " ".join(s.lower().split())


def _items_equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        if a.__class__ in _TEMPORAL_CLASSES or b.__class__ in _TEMPORAL_CLASSES:
            return _temporal_cmp(a, b) == 0
        return _normalise_text(a) == _normalise_text(b)
    if _is_number(a) and _is_number(b):
        return a == b
    r = _items_equal(a, b)
    return bool(r)


def _coll_equivalent(left: list, right: list) -> bool:
    if len(left) != len(right):
        return False
    remaining = list(right)
    for a in left:
        for k, b in enumerate(remaining):
            if _items_equivalent(a, b):
                del remaining[k]
                break
        else:
            return False
    return True


def _compare(a: Any, b: Any) -> int | None:
    if _is_number(a) and _is_number(b):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        if _is_temporal_pair(a, b):
            return _temporal_cmp(a, b)
        if a.__class__ in _TEMPORAL_CLASSES or b.__class__ in _TEMPORAL_CLASSES:
            return None
        return (a > b) - (a < b)
    return None


def _contains(coll: list, item: Any) -> bool:
    return any(_items_equal(x, item) for x in coll)


def _dedupe(items: list) -> list:
    out: list = []
    for x in items:
        if not _contains(out, x):
            out.append(x)
    return out


def _type_matches(value: Any, type_name: str) -> bool:
    """Runtime type test for a value whose FHIR type is not known from its JSON key."""
    c = value.__class__
    if type_name == "boolean":
        return c is bool
    if type_name in _INTEGER_TYPES:
        return c is int
    if type_name == "decimal":
        return c is float or c is int
    if type_name in _STRING_TYPES:
        return isinstance(value, str) and c not in _TEMPORAL_CLASSES
    if type_name == "date":
        return (
            isinstance(value, str) and c is not FhirTime and bool(re.fullmatch(r"\d{4}(?:-\d{2}(?:-\d{2})?)?", value))
        )
    if type_name in ("dateTime", "instant"):
        return isinstance(value, str) and c is not FhirTime and _parse_datetime(value) is not None
    if type_name == "time":
        return isinstance(value, str) and (c is FhirTime or _TIME_RE.fullmatch(value) is not None)
    if type_name in FHIR_RESOURCE_TYPES or type_name in ("Resource", "DomainResource"):
        if not isinstance(value, dict):
            return False
        rt = value.get("resourceType")
        return rt is not None and (type_name in ("Resource", "DomainResource") or rt == type_name)
    # Complex data types cannot be told apart in plain JSON: any object qualifies.
    return isinstance(value, dict) and "resourceType" not in value


def _wrap_temporal(items: list, type_name: str) -> list:
    cls = _TEMPORAL_WRAP.get(type_name)
    if cls is None:
        return items
    return [cls(v) if isinstance(v, str) else v for v in items]


# ---- boundaries (FHIRPath lowBoundary/highBoundary) ----


def _decimal_boundary(v: float | int, high: bool) -> float:
    d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    exp = d.as_tuple().exponent
    places = -exp if isinstance(exp, int) and exp < 0 else 0
    half = Decimal(5) * Decimal(10) ** (-(places + 1))
    return float(d + half if high else d - half)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (_dt.date(year, month + 1, 1) - _dt.date(year, month, 1)).days


def _date_boundary(text: str, high: bool) -> str | None:
    m = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    if m is None:
        return None
    year = int(m.group(1))
    month = int(m.group(2)) if m.group(2) else (12 if high else 1)
    if m.group(3):
        day = int(m.group(3))
    else:
        day = _days_in_month(year, month) if high else 1
    return f"{year:04d}-{month:02d}-{day:02d}"


def _time_boundary(text: str, high: bool) -> str | None:
    m = re.fullmatch(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?", text)
    if m is None:
        return None
    hh = m.group(1)
    mm = m.group(2) or ("59" if high else "00")
    ss = m.group(3) or ("59" if high else "00")
    frac = m.group(4) or ""
    frac = (frac + ("999" if high else "000"))[:3] if len(frac) < 3 else frac
    return f"{hh}:{mm}:{ss}.{frac}"


def _datetime_boundary(text: str, high: bool) -> str | None:
    m = re.fullmatch(r"(\d{4}(?:-\d{2}(?:-\d{2})?)?)(?:T([\d:.]+)?(Z|[+-]\d{2}:\d{2})?)?", text)
    if m is None:
        return None
    date = _date_boundary(m.group(1), high)
    time = _time_boundary(m.group(2), high) if m.group(2) else ("23:59:59.999" if high else "00:00:00.000")
    if date is None or time is None:
        return None
    # Without a zone the instant could be anywhere from UTC+14 to UTC-12.
    tz = m.group(3) or ("-12:00" if high else "+14:00")
    return f"{date}T{time}{tz}"


def _boundary(v: Any, high: bool) -> Any:
    c = v.__class__
    if c is bool:
        return None
    if c is int or c is float:
        return _decimal_boundary(v, high)
    if isinstance(v, str):
        if c is FhirTime:
            r = _time_boundary(v, high)
            return None if r is None else FhirTime(r)
        if c is FhirDateTime or "T" in v:
            r = _datetime_boundary(v, high)
            return None if r is None else FhirDateTime(r)
        if _TIME_RE.fullmatch(v) and ":" in v:
            r = _time_boundary(v, high)
            return None if r is None else FhirTime(r)
        r = _date_boundary(v, high)
        if r is not None:
            return FhirDate(r)
        return None
    if isinstance(v, dict):
        # Period: low = start.lowBoundary(), high = end.highBoundary().
        key = "end" if high else "start"
        if "start" in v or "end" in v:
            bound = v.get(key)
            if isinstance(bound, str):
                r = _datetime_boundary(bound, high)
                return None if r is None else FhirDateTime(r)
            return None
        # Quantity: boundary of its value.
        if _is_number(v.get("value")):
            out = dict(v)
            out["value"] = _decimal_boundary(v["value"], high)
            return out
    return None


# ---- references ----

_REF_TAIL_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def _resource_key(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    rt = item.get("resourceType")
    rid = item.get("id")
    if isinstance(rt, str) and isinstance(rid, str):
        return f"{rt}/{rid}"
    return None


def _reference_key(item: Any, wanted: str | None) -> str | None:
    """Key ``Type/id`` for a Reference; None when it cannot be resolved or has another type."""
    if not isinstance(item, dict):
        return None
    ref = item.get("reference")
    declared = item.get("type")
    if not isinstance(ref, str) or not ref or ref.startswith("#") or "?" in ref:
        return None
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        # Bundle-local references: the id is the UUID/OID itself (as Synthea and most bundle
        # writers do); the type comes from Reference.type or, failing that, the caller.
        rtype = declared if isinstance(declared, str) else wanted
        if rtype is None or (wanted is not None and rtype != wanted):
            return None
        return f"{rtype}/{ref.rsplit(':', 1)[1]}"
    rtype, slash, rid = ref.partition("/")
    if not slash or "/" in rid or not rid or rtype not in FHIR_RESOURCE_TYPES:
        m = _REF_TAIL_RE.search(ref)
        if m is None:
            return None
        rtype, rid = m.group(1), m.group(2)
    if wanted is not None and rtype != wanted:
        return None
    return f"{rtype}/{rid}"


# --------------------------------------------------------------------------------------------
# Compiler.

_BUILTIN_VARS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


def _member_step(name: str) -> Fn:
    """Navigate ``name`` on every object in a collection, flattening lists."""
    choice = name in _CHOICE_BASES
    prefix_len = len(name)

    def step(coll: list, env: Env | None = None) -> list:
        out: list = []
        for item in coll:
            if item.__class__ is not dict and not isinstance(item, dict):
                continue
            v = item.get(name)
            if v is None:
                if not choice:
                    continue
                v = None
                for key in item:
                    if key.startswith(name) and key[prefix_len:] in _CHOICE_SUFFIXES:
                        v = item[key]
                        break
                if v is None:
                    continue
            if v.__class__ is list:
                if v and v[0].__class__ is not dict:
                    out.extend(x for x in v if x is not None)
                else:
                    out.extend(v)
            else:
                out.append(v)
        return out

    return step


def _path_fn(names: tuple[str, ...]) -> Fn:
    steps = [_member_step(n) for n in names]
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        s1, s2 = steps

        def two(coll: list, env: Env) -> list:
            r = s1(coll, env)
            return s2(r, env) if r else r

        return two

    def many(coll: list, env: Env) -> list:
        for s in steps:
            coll = s(coll, env)
            if not coll:
                return coll
        return coll

    return many


def _identity(coll: list, env: Env) -> list:
    return coll


def _empty(coll: list, env: Env) -> list:
    return []


def _const(value: Any) -> Fn:
    result = [value]

    def const(coll: list, env: Env) -> list:
        return result

    return const


def _chain(src: Fn | None, step: Callable[[list, Env], list]) -> Fn:
    if src is None:
        return step

    def chained(coll: list, env: Env) -> list:
        return step(src(coll, env), env)

    return chained


SUPPORTED_FUNCTIONS: frozenset[str] = frozenset(
    """where select repeat exists empty all allTrue anyTrue allFalse anyFalse count first last
    tail skip take single distinct isDistinct not iif join ofType is as extension hasValue
    getResourceKey getReferenceKey lowBoundary highBoundary toString toInteger toDecimal
    startsWith endsWith contains substring lower upper length replace matches trim union
    combine""".split()
)

_UNSUPPORTED_HINTS = {
    "resolve": "references are joined through getReferenceKey(), not resolved",
    "memberOf": "terminology membership is resolved in SQL from mappings/, not in FHIRPath",
    "now": "non-deterministic functions are not allowed in views",
    "today": "non-deterministic functions are not allowed in views",
    "timeOfDay": "non-deterministic functions are not allowed in views",
    "trace": "trace() has side effects",
}


class _Compiler:
    def __init__(self, expression: str, constants: Mapping[str, Any]) -> None:
        self.expression = expression
        self.constants = constants

    def error(self, message: str) -> FhirPathError:
        return FhirPathError(f"{message} in FHIRPath {self.expression!r}")

    # -- type specifiers --
    def type_name(self, node: tuple) -> str:
        if node[0] == "ident":
            name = node[1]
        elif node[0] == "member" and node[1][0] == "ident":
            name = f"{node[1][1]}.{node[2]}"
        elif node[0] == "lit" and isinstance(node[1], str):
            name = node[1]
        else:
            raise self.error("expected a type name")
        return self.resolve_type(name)

    def resolve_type(self, name: str) -> str:
        if name.startswith("FHIR."):
            name = name[5:]
        elif name.startswith("System."):
            sys_name = name[7:]
            if sys_name not in _SYSTEM_TYPES:
                raise self.error(f"unknown type {name!r}")
            return _SYSTEM_TYPES[sys_name]
        if (
            name in FHIR_PRIMITIVE_TYPES
            or name in FHIR_COMPLEX_TYPES
            or name in FHIR_RESOURCE_TYPES
            or name in ("Resource", "DomainResource")
        ):
            return name
        if name in _SYSTEM_TYPES:
            return _SYSTEM_TYPES[name]
        raise self.error(f"unknown type {name!r}")

    # -- helpers --
    @staticmethod
    def path_names(node: tuple) -> tuple[str, ...] | None:
        """Names of a pure member chain rooted at the focus (``a.b.c``), else None."""
        names: list[str] = []
        while node[0] == "member":
            names.append(node[2])
            node = node[1]
        if node[0] != "ident":
            return None
        head = node[1]
        if head[:1].isupper() and head in FHIR_RESOURCE_TYPES:
            return None
        names.append(head)
        return tuple(reversed(names))

    def compile(self, node: tuple) -> Fn:
        kind = node[0]
        method = getattr(self, "c_" + kind)
        return method(node)

    # -- terms --
    def c_lit(self, node: tuple) -> Fn:
        return _const(node[1])

    def c_empty(self, node: tuple) -> Fn:
        return _empty

    def c_this(self, node: tuple) -> Fn:
        return _identity

    def c_var(self, node: tuple) -> Fn:
        name = node[1]
        if name in ("resource", "rootResource", "context"):

            def resource(coll: list, env: Env) -> list:
                return [] if env.resource is None else [env.resource]

            return resource
        if name == "rowIndex":

            def row_index(coll: list, env: Env) -> list:
                return [env.row_index]

            return row_index
        if name in self.constants:
            value = self.constants[name]
            if value is None:
                return _empty
            if isinstance(value, list):
                fixed = list(value)
                return lambda coll, env: fixed
            return _const(value)
        if name in _BUILTIN_VARS:
            return _const(_BUILTIN_VARS[name])
        raise self.error(f"undefined constant %{name}")

    def c_ident(self, node: tuple) -> Fn:
        name = node[1]
        if name[:1].isupper() and name in FHIR_RESOURCE_TYPES:

            def type_filter(coll: list, env: Env) -> list:
                return [x for x in coll if isinstance(x, dict) and x.get("resourceType") == name]

            return type_filter
        return _path_fn((name,))

    def c_member(self, node: tuple) -> Fn:
        names = self.path_names(node)
        if names is not None:
            return _path_fn(names)
        src = self.compile(node[1])
        step = _member_step(node[2])

        def member(coll: list, env: Env) -> list:
            r = src(coll, env)
            return step(r, env) if r else r

        return member

    def c_index(self, node: tuple) -> Fn:
        src = self.compile(node[1])
        idx_node = node[2]
        if idx_node[0] == "lit" and idx_node[1].__class__ is int:
            k = idx_node[1]

            def index_const(coll: list, env: Env) -> list:
                r = src(coll, env)
                return [r[k]] if 0 <= k < len(r) else []

            return index_const
        idx_fn = self.compile(idx_node)

        def index(coll: list, env: Env) -> list:
            r = src(coll, env)
            k = _single(idx_fn(coll, env), "indexer")
            if k is None:
                return []
            if k.__class__ is not int:
                raise FhirPathEvaluationError(f"indexer expects an integer, got {k!r}")
            return [r[k]] if 0 <= k < len(r) else []

        return index

    def c_neg(self, node: tuple) -> Fn:
        src = self.compile(node[1])

        def neg(coll: list, env: Env) -> list:
            v = _single(src(coll, env), "unary minus")
            if v is None:
                return []
            if not _is_number(v):
                raise FhirPathEvaluationError(f"unary minus expects a number, got {v!r}")
            return [-v]

        return neg

    def c_is(self, node: tuple) -> Fn:
        src = self.compile(node[1])
        t = self.resolve_type(node[2])

        def is_(coll: list, env: Env) -> list:
            v = src(coll, env)
            if not v:
                return []
            return [_type_matches(_single(v, "is"), t)]

        return is_

    def c_as(self, node: tuple) -> Fn:
        src = self.compile(node[1])
        t = self.resolve_type(node[2])

        def as_(coll: list, env: Env) -> list:
            v = src(coll, env)
            if not v:
                return []
            item = _single(v, "as")
            return _wrap_temporal([item], t) if _type_matches(item, t) else []

        return as_

    # -- binary operators --
    def c_bin(self, node: tuple) -> Fn:
        op = node[1]
        left = self.compile(node[2])
        right = self.compile(node[3])
        if op in ("and", "or", "xor", "implies"):
            return self.logic(op, left, right)
        if op == "=":
            return lambda coll, env: _coll_equal(left(coll, env), right(coll, env))
        if op == "!=":

            def ne(coll: list, env: Env) -> list:
                r = _coll_equal(left(coll, env), right(coll, env))
                return [not r[0]] if r else r

            return ne
        if op == "~":
            return lambda coll, env: [_coll_equivalent(left(coll, env), right(coll, env))]
        if op == "!~":
            return lambda coll, env: [not _coll_equivalent(left(coll, env), right(coll, env))]
        if op in ("<", ">", "<=", ">="):
            return self.comparison(op, left, right)
        if op == "|":
            return lambda coll, env: _dedupe(left(coll, env) + right(coll, env))
        if op == "in":
            return self.membership(left, right)
        if op == "contains":
            return self.membership(right, left)
        if op == "&":

            def concat(coll: list, env: Env) -> list:
                a = _single(left(coll, env), "&")
                b = _single(right(coll, env), "&")
                return [("" if a is None else str(a)) + ("" if b is None else str(b))]

            return concat
        return self.arithmetic(op, left, right)

    def logic(self, op: str, left: Fn, right: Fn) -> Fn:
        if op == "and":

            def and_(coll: list, env: Env) -> list:
                a = _as_bool(left(coll, env), "and")
                if a is False:
                    return [False]
                b = _as_bool(right(coll, env), "and")
                if b is False:
                    return [False]
                if a is None or b is None:
                    return []
                return [True]

            return and_
        if op == "or":

            def or_(coll: list, env: Env) -> list:
                a = _as_bool(left(coll, env), "or")
                if a is True:
                    return [True]
                b = _as_bool(right(coll, env), "or")
                if b is True:
                    return [True]
                if a is None or b is None:
                    return []
                return [False]

            return or_
        if op == "xor":

            def xor(coll: list, env: Env) -> list:
                a = _as_bool(left(coll, env), "xor")
                b = _as_bool(right(coll, env), "xor")
                if a is None or b is None:
                    return []
                return [a != b]

            return xor

        def implies(coll: list, env: Env) -> list:
            a = _as_bool(left(coll, env), "implies")
            if a is False:
                return [True]
            b = _as_bool(right(coll, env), "implies")
            if a is True:
                return [] if b is None else [b]
            return [True] if b is True else []

        return implies

    def comparison(self, op: str, left: Fn, right: Fn) -> Fn:
        test = {
            "<": lambda c: c < 0,
            ">": lambda c: c > 0,
            "<=": lambda c: c <= 0,
            ">=": lambda c: c >= 0,
        }[op]

        def compare(coll: list, env: Env) -> list:
            a = _single(left(coll, env), op)
            if a is None:
                return []
            b = _single(right(coll, env), op)
            if b is None:
                return []
            c = _compare(a, b)
            return [] if c is None else [test(c)]

        return compare

    def membership(self, item_fn: Fn, coll_fn: Fn) -> Fn:
        def member_of(coll: list, env: Env) -> list:
            item = item_fn(coll, env)
            if not item:
                return []
            return [_contains(coll_fn(coll, env), _single(item, "in/contains"))]

        return member_of

    def arithmetic(self, op: str, left: Fn, right: Fn) -> Fn:
        def arith(coll: list, env: Env) -> list:
            a = _single(left(coll, env), op)
            if a is None:
                return []
            b = _single(right(coll, env), op)
            if b is None:
                return []
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                return [str.__str__(a) + str.__str__(b)]
            if not (_is_number(a) and _is_number(b)):
                raise FhirPathEvaluationError(f"operator {op!r} is not supported for {a!r} and {b!r}")
            if op == "+":
                return [a + b]
            if op == "-":
                return [a - b]
            if op == "*":
                return [a * b]
            if op == "/":
                return [] if b == 0 else [a / b]
            if op == "div":
                if b == 0:
                    return []
                q = abs(a) // abs(b)
                q = q if (a >= 0) == (b >= 0) else -q
                return [int(q) if a.__class__ is int and b.__class__ is int else q]
            if b == 0:  # mod
                return []
            r = abs(a) % abs(b)
            return [r if a >= 0 else -r]

        return arith

    # -- function calls --
    def c_call(self, node: tuple) -> Fn:
        _, base, name, args = node
        if name not in SUPPORTED_FUNCTIONS:
            hint = _UNSUPPORTED_HINTS.get(name, "not in the supported FHIRPath subset")
            raise self.error(f"function {name}() is not supported ({hint})")
        handler = getattr(self, "f_" + name)
        return handler(base, args)

    def src(self, base: tuple | None) -> Fn | None:
        return None if base is None else self.compile(base)

    def nargs(self, name: str, args: list, lo: int, hi: int) -> None:
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo}..{hi}"
            raise self.error(f"{name}() takes {want} argument(s), got {len(args)}")

    def simple(self, base: tuple | None, args: list, name: str, n: int, fn: Callable[[list], list]) -> Fn:
        """A function of its input collection only."""
        self.nargs(name, args, n, n)
        src = self.src(base)
        if src is None:
            return lambda coll, env: fn(coll)
        return lambda coll, env: fn(src(coll, env))

    def f_where(self, base: tuple | None, args: list) -> Fn:
        self.nargs("where", args, 1, 1)
        crit = self.compile(args[0])

        def where(coll: list, env: Env) -> list:
            return [x for x in coll if _as_bool(crit([x], env), "where()") is True]

        return _chain(self.src(base), where)

    def f_select(self, base: tuple | None, args: list) -> Fn:
        self.nargs("select", args, 1, 1)
        proj = self.compile(args[0])

        def select(coll: list, env: Env) -> list:
            out: list = []
            for x in coll:
                out.extend(proj([x], env))
            return out

        return _chain(self.src(base), select)

    def f_repeat(self, base: tuple | None, args: list) -> Fn:
        self.nargs("repeat", args, 1, 1)
        proj = self.compile(args[0])

        def repeat(coll: list, env: Env) -> list:
            out: list = []
            queue = list(coll)
            while queue:
                nxt: list = []
                for x in queue:
                    for y in proj([x], env):
                        if not _contains(out, y):
                            out.append(y)
                            nxt.append(y)
                queue = nxt
            return out

        return _chain(self.src(base), repeat)

    def f_exists(self, base: tuple | None, args: list) -> Fn:
        self.nargs("exists", args, 0, 1)
        if args:
            crit = self.compile(args[0])

            def exists_crit(coll: list, env: Env) -> list:
                return [any(_as_bool(crit([x], env), "exists()") is True for x in coll)]

            return _chain(self.src(base), exists_crit)
        return self.simple(base, args, "exists", 0, lambda c: [bool(c)])

    def f_empty(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "empty", 0, lambda c: [not c])

    def f_all(self, base: tuple | None, args: list) -> Fn:
        self.nargs("all", args, 1, 1)
        crit = self.compile(args[0])

        def all_(coll: list, env: Env) -> list:
            return [all(_as_bool(crit([x], env), "all()") is True for x in coll)]

        return _chain(self.src(base), all_)

    def _bools(self, c: list, name: str) -> list[bool]:
        for v in c:
            if v.__class__ is not bool:
                raise FhirPathEvaluationError(f"{name}() expects booleans, got {v!r}")
        return c

    def f_allTrue(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "allTrue", 0, lambda c: [all(self._bools(c, "allTrue"))])

    def f_anyTrue(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "anyTrue", 0, lambda c: [any(self._bools(c, "anyTrue"))])

    def f_allFalse(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "allFalse", 0, lambda c: [not any(self._bools(c, "allFalse"))])

    def f_anyFalse(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "anyFalse", 0, lambda c: [not all(self._bools(c, "anyFalse"))])

    def f_count(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "count", 0, lambda c: [len(c)])

    def f_first(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "first", 0, lambda c: c[:1])

    def f_last(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "last", 0, lambda c: c[-1:])

    def f_tail(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "tail", 0, lambda c: c[1:])

    def f_single(self, base: tuple | None, args: list) -> Fn:
        def single(c: list) -> list:
            if len(c) > 1:
                raise FhirPathEvaluationError(f"single() got {len(c)} items")
            return c

        return self.simple(base, args, "single", 0, single)

    def f_distinct(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "distinct", 0, _dedupe)

    def f_isDistinct(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "isDistinct", 0, lambda c: [len(_dedupe(c)) == len(c)])

    def f_skip(self, base: tuple | None, args: list) -> Fn:
        self.nargs("skip", args, 1, 1)
        n_fn = self.compile(args[0])

        def skip(coll: list, env: Env) -> list:
            n = _single(n_fn(coll, env), "skip()")
            return coll if n is None else coll[max(int(n), 0) :]

        return _chain(self.src(base), skip)

    def f_take(self, base: tuple | None, args: list) -> Fn:
        self.nargs("take", args, 1, 1)
        n_fn = self.compile(args[0])

        def take(coll: list, env: Env) -> list:
            n = _single(n_fn(coll, env), "take()")
            return [] if n is None else coll[: max(int(n), 0)]

        return _chain(self.src(base), take)

    def f_not(self, base: tuple | None, args: list) -> Fn:
        def not_(c: list) -> list:
            b = _as_bool(c, "not()")
            return [] if b is None else [not b]

        return self.simple(base, args, "not", 0, not_)

    def f_iif(self, base: tuple | None, args: list) -> Fn:
        self.nargs("iif", args, 2, 3)
        cond = self.compile(args[0])
        yes = self.compile(args[1])
        no = self.compile(args[2]) if len(args) == 3 else _empty

        def iif(coll: list, env: Env) -> list:
            if len(coll) > 1:
                raise FhirPathEvaluationError(f"iif() on {len(coll)} items")
            if _as_bool(cond(coll, env), "iif()") is True:
                return yes(coll, env)
            return no(coll, env)

        return _chain(self.src(base), iif)

    def f_join(self, base: tuple | None, args: list) -> Fn:
        self.nargs("join", args, 0, 1)
        sep_fn = self.compile(args[0]) if args else _const("")

        def join(coll: list, env: Env) -> list:
            sep = _single(sep_fn(coll, env), "join()")
            sep = "" if sep is None else str(sep)
            parts = []
            for v in coll:
                if not isinstance(v, str):
                    raise FhirPathEvaluationError(f"join() expects strings, got {v!r}")
                parts.append(str.__str__(v))
            return [sep.join(parts)]

        return _chain(self.src(base), join)

    def f_ofType(self, base: tuple | None, args: list) -> Fn:
        self.nargs("ofType", args, 1, 1)
        t = self.type_name(args[0])
        choice_base = (
            base is not None
            and t not in FHIR_RESOURCE_TYPES
            and (base[0] == "member" or (base[0] == "ident" and base[1] not in FHIR_RESOURCE_TYPES))
        )
        if choice_base:
            assert base is not None
            # Choice element: `value.ofType(Quantity)` reads `valueQuantity`; a non-choice
            # element of that name is kept when its JSON value has the requested type.
            if base[0] == "member":
                parent = self.compile(base[1])
                last = base[2]
            else:
                parent = _identity
                last = base[1]
            key = last + _cap(t)
            wrap = _TEMPORAL_WRAP.get(t)

            def of_type_member(coll: list, env: Env) -> list:
                out: list = []
                for item in parent(coll, env):
                    if not isinstance(item, dict):
                        continue
                    v = item.get(key)
                    if v is None:
                        plain = item.get(last)
                        if plain is None:
                            continue
                        vals = plain if plain.__class__ is list else [plain]
                        out.extend(x for x in vals if x is not None and _type_matches(x, t))
                    elif v.__class__ is list:
                        out.extend(x for x in v if x is not None)
                    else:
                        out.append(v)
                if wrap is not None and out:
                    return [wrap(x) if isinstance(x, str) else x for x in out]
                return out

            return of_type_member

        def of_type(coll: list, env: Env) -> list:
            return _wrap_temporal([x for x in coll if _type_matches(x, t)], t)

        return _chain(self.src(base), of_type)

    def f_is(self, base: tuple | None, args: list) -> Fn:
        self.nargs("is", args, 1, 1)
        t = self.type_name(args[0])

        def is_(coll: list, env: Env) -> list:
            if not coll:
                return []
            return [_type_matches(_single(coll, "is()"), t)]

        return _chain(self.src(base), is_)

    def f_as(self, base: tuple | None, args: list) -> Fn:
        self.nargs("as", args, 1, 1)
        t = self.type_name(args[0])

        def as_(coll: list, env: Env) -> list:
            return _wrap_temporal([x for x in coll if _type_matches(x, t)], t)

        return _chain(self.src(base), as_)

    def f_extension(self, base: tuple | None, args: list) -> Fn:
        self.nargs("extension", args, 1, 1)
        url_fn = self.compile(args[0])

        def extension(coll: list, env: Env) -> list:
            url = _single(url_fn(coll, env), "extension()")
            if url is None:
                return []
            out: list = []
            for item in coll:
                if isinstance(item, dict):
                    exts = item.get("extension")
                    if exts:
                        out.extend(e for e in exts if isinstance(e, dict) and e.get("url") == url)
            return out

        return _chain(self.src(base), extension)

    def f_hasValue(self, base: tuple | None, args: list) -> Fn:
        return self.simple(base, args, "hasValue", 0, lambda c: [len(c) == 1 and not isinstance(c[0], dict)])

    def f_getResourceKey(self, base: tuple | None, args: list) -> Fn:
        def key(c: list) -> list:
            out = []
            for item in c:
                k = _resource_key(item)
                if k is not None:
                    out.append(k)
            return out

        return self.simple(base, args, "getResourceKey", 0, key)

    def f_getReferenceKey(self, base: tuple | None, args: list) -> Fn:
        self.nargs("getReferenceKey", args, 0, 1)
        wanted = None
        if args:
            wanted = self.type_name(args[0])
            if wanted not in FHIR_RESOURCE_TYPES:
                raise self.error(f"getReferenceKey() expects a resource type, got {wanted!r}")

        def ref_key(coll: list, env: Env) -> list:
            out = []
            for item in coll:
                k = _reference_key(item, wanted)
                if k is not None:
                    out.append(k)
            return out

        return _chain(self.src(base), ref_key)

    def f_lowBoundary(self, base: tuple | None, args: list) -> Fn:
        return self.boundary(base, args, "lowBoundary", False)

    def f_highBoundary(self, base: tuple | None, args: list) -> Fn:
        return self.boundary(base, args, "highBoundary", True)

    def boundary(self, base: tuple | None, args: list, name: str, high: bool) -> Fn:
        self.nargs(name, args, 0, 1)
        if args:
            raise self.error(f"{name}() with a precision argument is not supported")

        def bound(c: list) -> list:
            out = []
            for v in c:
                r = _boundary(v, high)
                if r is not None:
                    out.append(r)
            return out

        return self.simple(base, args, name, 0, bound)

    def f_toString(self, base: tuple | None, args: list) -> Fn:
        def to_string(c: list) -> list:
            v = _single(c, "toString()")
            if v is None or isinstance(v, dict):
                return []
            if v.__class__ is bool:
                return ["true" if v else "false"]
            return [str(v) if not isinstance(v, str) else str.__str__(v)]

        return self.simple(base, args, "toString", 0, to_string)

    def f_toInteger(self, base: tuple | None, args: list) -> Fn:
        def to_integer(c: list) -> list:
            v = _single(c, "toInteger()")
            if v.__class__ is bool:
                return [int(v)]
            if v.__class__ is int:
                return [v]
            if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
                return [int(v)]
            return []

        return self.simple(base, args, "toInteger", 0, to_integer)

    def f_toDecimal(self, base: tuple | None, args: list) -> Fn:
        def to_decimal(c: list) -> list:
            v = _single(c, "toDecimal()")
            if v.__class__ is bool:
                return [1.0 if v else 0.0]
            if _is_number(v):
                return [float(v)]
            if isinstance(v, str) and re.fullmatch(r"[+-]?\d+(?:\.\d+)?", v):
                try:
                    return [float(Decimal(v))]
                except InvalidOperation:  # pragma: no cover - regex guarantees a number
                    return []
            return []

        return self.simple(base, args, "toDecimal", 0, to_decimal)

    def string_fn(self, base: tuple | None, args: list, name: str, n: int, fn: Callable[..., Any]) -> Fn:
        """A string function: input and every argument must be single strings (or empty)."""
        self.nargs(name, args, n if name != "substring" else 1, n)
        arg_fns = [self.compile(a) for a in args]

        def call(coll: list, env: Env) -> list:
            s = _single(coll, f"{name}()")
            if s is None:
                return []
            if not isinstance(s, str):
                raise FhirPathEvaluationError(f"{name}() expects a string, got {s!r}")
            values = []
            for f in arg_fns:
                a = _single(f(coll, env), f"{name}() argument")
                if a is None:
                    return []
                values.append(a)
            r = fn(str.__str__(s), *values)
            return [] if r is None else [r]

        return _chain(self.src(base), call)

    def f_startsWith(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "startsWith", 1, lambda s, p: s.startswith(p))

    def f_endsWith(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "endsWith", 1, lambda s, p: s.endswith(p))

    def f_contains(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "contains", 1, lambda s, p: p in s)

    def f_substring(self, base: tuple | None, args: list) -> Fn:
        def substring(s: str, start: int, length: int | None = None) -> str | None:
            if start < 0 or start >= len(s):
                return None
            return s[start:] if length is None else s[start : start + max(length, 0)]

        return self.string_fn(base, args, "substring", 2, substring)

    def f_lower(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "lower", 0, str.lower)

    def f_upper(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "upper", 0, str.upper)

    def f_trim(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "trim", 0, str.strip)

    def f_length(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "length", 0, len)

    def f_replace(self, base: tuple | None, args: list) -> Fn:
        return self.string_fn(base, args, "replace", 2, lambda s, a, b: s.replace(a, b))

    def f_matches(self, base: tuple | None, args: list) -> Fn:
        cache: dict[str, re.Pattern[str]] = {}

        def matches(s: str, pattern: str) -> bool:
            rx = cache.get(pattern)
            if rx is None:
                try:
                    rx = cache[pattern] = re.compile(pattern, re.DOTALL)
                except re.error as exc:
                    raise FhirPathEvaluationError(f"invalid regex {pattern!r}: {exc}") from exc
            return rx.search(s) is not None

        return self.string_fn(base, args, "matches", 1, matches)

    def f_union(self, base: tuple | None, args: list) -> Fn:
        self.nargs("union", args, 1, 1)
        other = self.compile(args[0])
        src = self.src(base) or _identity
        return lambda coll, env: _dedupe(src(coll, env) + other(coll, env))

    def f_combine(self, base: tuple | None, args: list) -> Fn:
        self.nargs("combine", args, 1, 1)
        other = self.compile(args[0])
        src = self.src(base) or _identity
        return lambda coll, env: src(coll, env) + other(coll, env)


def compile_path(expression: str, constants: Mapping[str, Any] | None = None) -> CompiledPath:
    """Parse and compile ``expression`` once.

    ``constants`` binds ``%name`` references at compile time (values are FHIRPath items: ``str``,
    ``int``, ``float``, ``bool``, typed temporals, or a list for a collection). Referencing an
    unknown ``%name`` raises ``FhirPathError``, as does any construct outside the subset.
    """
    if not isinstance(expression, str):
        raise FhirPathError(f"FHIRPath expression must be a string, got {expression!r}")
    ast = _Parser(expression).parse()
    compiler = _Compiler(expression, constants or {})
    fn = compiler.compile(ast)
    plan = _scalar_plan(ast)
    return CompiledPath(expression, fn, _scalar_fn(plan) if plan else None)


# --------------------------------------------------------------------------------------------
# Scalar fast path: ops are ("key", name, is_choice_base) | ("choice", key, plain_name) |
# ("ref", wanted_type) | ("reskey",), or a single ("cmp", "="|"!=", ops, literal). Any list,
# non-object, bare choice or type mismatch -> NOT_SCALAR (the general evaluator decides).


def _scalar_plan(node: tuple) -> list[tuple] | None:
    kind = node[0]
    if kind == "ident":
        name = node[1]
        if name[:1].isupper() and name in FHIR_RESOURCE_TYPES:
            return None
        return [("key", name, name in _CHOICE_BASES)]
    if kind == "member":
        head = _scalar_plan(node[1])
        return None if head is None else [*head, ("key", node[2], node[2] in _CHOICE_BASES)]
    if kind == "bin" and node[1] in ("=", "!="):
        # `path = 'literal'` (or the mirror image) on a single value; types must match exactly.
        left, right = node[2], node[3]
        if right[0] != "lit":
            left, right = right, left
        lit = right[1] if right[0] == "lit" else None
        if lit is None or lit.__class__ not in (str, int, bool):
            return None
        inner = _scalar_plan(left)
        if inner is None or inner[-1][0] in ("ref", "reskey", "cmp"):
            return None
        return [("cmp", node[1], inner, lit)]
    if kind != "call":
        return None
    _, base, name, args = node
    if name == "getResourceKey" and base is None and not args:
        return [("reskey",)]
    if name == "getReferenceKey" and base is not None and len(args) <= 1:
        head = _scalar_plan(base)
        if head is None:
            return None
        wanted = None
        if args:
            arg = args[0]
            if arg[0] == "ident" and arg[1] in FHIR_RESOURCE_TYPES:
                wanted = arg[1]
            elif arg[0] == "lit" and arg[1] in FHIR_RESOURCE_TYPES:
                wanted = arg[1]
            else:
                return None
        return [*head, ("ref", wanted)]
    if name == "ofType" and base is not None and len(args) == 1 and base[0] in ("ident", "member"):
        arg = args[0]
        if arg[0] != "ident":
            return None
        t = arg[1]
        if t not in FHIR_PRIMITIVE_TYPES and t not in FHIR_COMPLEX_TYPES:
            return None
        if base[0] == "ident":
            if base[1][:1].isupper() and base[1] in FHIR_RESOURCE_TYPES:
                return None
            head: list[tuple] | None = []
            last = base[1]
        else:
            head = _scalar_plan(base[1])
            last = base[2]
        if head is None:
            return None
        return [*head, ("choice", last + _cap(t), last)]
    return None


def _scalar_fn(plan: list[tuple]) -> Scalar:
    """Generate straight-line Python for a plan (compiled once; no per-call op dispatch)."""
    lines = ["def scalar(item):"]
    body = _scalar_body(plan, "item", "v", lines, "    ")
    lines.append(f"    return {body}")
    namespace: dict[str, Any] = {
        "NS": NOT_SCALAR,
        "_reference_key": _reference_key,
        "_resource_key": _resource_key,
    }
    # Source is built only from repr() of names/literals taken from the parsed expression.
    exec(compile("\n".join(lines), "<fhirpath scalar>", "exec"), namespace)
    return namespace["scalar"]


def _scalar_body(plan: list[tuple], src: str, var: str, lines: list[str], ind: str) -> str:
    """Append code computing ``plan`` on ``src``; return the expression holding the result."""
    if plan and plan[0][0] == "cmp":
        _, op, left, literal = plan[0]
        value = _scalar_body(left, src, var, lines, ind)
        lit = repr(literal)
        lines.append(f"{ind}if {value} is None: return None")
        lines.append(f"{ind}if {value}.__class__ is not {type(literal).__name__}: return NS")
        return f"({value} {'==' if op == '=' else '!='} {lit})"
    cur = src
    for op in plan:
        lines.append(f"{ind}if {cur}.__class__ is not dict: return NS")
        kind = op[0]
        if kind == "key":
            lines.append(f"{ind}{var} = {cur}.get({op[1]!r})")
            lines.append(f"{ind}if {var} is None: return {'NS' if op[2] else 'None'}")
        elif kind == "choice":
            lines.append(f"{ind}{var} = {cur}.get({op[1]!r})")
            lines.append(f"{ind}if {var} is None: return NS if {op[2]!r} in {cur} else None")
        elif kind == "ref":
            lines.append(f"{ind}return _reference_key({cur}, {op[1]!r})")
            return "None"
        else:
            lines.append(f"{ind}return _resource_key({cur})")
            return "None"
        cur = var
    lines.append(f"{ind}if {cur}.__class__ is list: return NS")
    return cur
