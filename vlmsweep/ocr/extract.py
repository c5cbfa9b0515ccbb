"""OCR text -> the domain's schema object by label-anchored rules (pure: strings in, a dict out).

Hand-written on purpose: no library maps Korean/Chinese prescription labels (성명, 姓名, 医师, 질병분류기호)
to this project's schema; the rules follow the labels real forms print, which are also the ones the
generators in vlmsweep/data/ render. Every key of the schema is present; what no rule finds is null.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from vlmsweep.data.schema import empty_target
from vlmsweep.prompts import schema_name

HANGUL = r"[가-힣]"
HAN = r"[\u4e00-\u9fff]"
SEP = r"\s*[:：|;]?\s*"  # OCR reads a label's colon as ':', '：', ';' or a table rule '|'

DATE_PATTERNS = (
    (re.compile(r"(\d{4})\s*년\s*(\d{1,2})\s*월\s*(\d{1,2})\s*일"), "{0}년 {1}월 {2}일"),
    (re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日"), "{0}年{1}月{2}日"),
    (re.compile(r"(?<!\d)(\d{4})\s*([-./])\s*(\d{1,2})\s*\2\s*(\d{1,2})(?!\d)"), None),
    (re.compile(r"(?<!\d)(\d{1,2})\s*([-./])\s*(\d{1,2})\s*\2\s*(\d{2,4})(?!\d)"), None),
    (re.compile(r"(?<![\w])(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})(?!\d)"), "{0} {1} {2}"),
)
# ICD-10 / KCD codes as printed (J06.9, E11, N39.0).
ICD = re.compile(r"(?<![A-Za-z0-9])([A-Z]\d{2}(?:\.\d{1,2})?)(?![A-Za-z0-9])")
UNIT = r"(mg|g|mL|ml|ML|μg|µg|ug|mcg|IU|iu)"
STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*" + UNIT + r"(?![A-Za-z])")
UNIT_CANON = {"ml": "mL", "ML": "mL", "µg": "μg", "ug": "μg", "mcg": "μg", "iu": "IU"}
NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
AMOUNT = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+(?:\.\d{2})?|\d+[.,]\d{2}(?!\d)|\d+)(?![\d,])")
KO_INSTITUTION = re.compile(r"([가-힣0-9A-Za-z]+(?:의원|병원|센터|보건소))")
ZH_INSTITUTION = re.compile(HAN + r"{2,}(?:医院|保健院|卫生服务中心|卫生院)")


def extract(text: str, domain: str) -> dict[str, Any]:
    """The schema object (every key present, null where no rule matched) that `text` of a `domain` page gives."""
    target = empty_target(schema_name(domain))
    rules: dict[str, Callable[[str], dict]] = {
        "prescription_ko": _prescription_ko, "prescription_zh": _prescription_zh, "prescription_en": _prescription_en,
        "receipt": _receipt_en, "receipt_ko": _receipt_ko, "receipt_zh": _receipt_zh,
    }
    if domain not in rules:
        raise ValueError(f"the OCR extractor has no rules for domain {domain!r}: expected one of {sorted(rules)}")
    found = rules[domain](text)
    return {key: found.get(key, value) for key, value in target.items()}


# ----------------------------------------------------------------------------- shared pieces


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _date(text: str) -> str | None:
    for pattern, fmt in DATE_PATTERNS:
        m = pattern.search(text)
        if m:
            if fmt is not None:
                return fmt.format(*m.groups())
            return m.group(0).replace(" ", "")
    return None


def _after(label: str, text: str, value: str) -> str | None:
    """The value right after the label's first occurrence (a later one is another field: 처방 의료인의 성명)."""
    at = re.search(label, text)
    m = re.match(SEP + "(" + value + ")", text[at.end():]) if at else None
    return m.group(1) if m else None


def _number(s: str) -> int | float:
    v = float(s)
    return int(v) if v.is_integer() else v


def _strength(m: re.Match) -> str:
    return f"{m.group(1)} {UNIT_CANON.get(m.group(2), m.group(2))}"


def _codes(text: str) -> list[str]:
    return list(dict.fromkeys(ICD.findall(text)))


def _amount_on(line: str) -> str | None:
    """The last amount printed on a line (a total's value stands at the right end)."""
    found = AMOUNT.findall(line.replace("¥", " ").replace("￥", " "))
    return found[-1] if found else None


def _labelled_amount(lines: list[str], labels: str, exclude: str | None = None) -> str | None:
    for line in lines:
        if re.search(labels, line, re.IGNORECASE) and not (exclude and re.search(exclude, line, re.IGNORECASE)):
            value = _amount_on(re.sub(labels, " ", line, flags=re.IGNORECASE))
            if value:
                return value
    return None


# ----------------------------------------------------------------------------- prescriptions


def _ko_med(line: str) -> dict | None:
    """A 처방전 table row: name [strength] dose frequency days usage."""
    m = STRENGTH.search(line)
    head = line[: m.start()] if m else re.split(r"\s\d", line, maxsplit=1)[0]
    name = re.sub(r"^[^\w가-힣]+|[^\w가-힣]+$", "", head).strip()
    if not re.search(HANGUL + "{2}|[A-Za-z]{4}", name):
        return None
    rest = line[m.end():] if m else line[len(head):]
    numbers = []
    for token in rest.replace("|", " ").split():
        if NUMBER.match(token) and len(numbers) < 3:
            numbers.append(_number(token))
        elif numbers:
            break  # the usage column (식후 30분) follows the three numbers
    numbers += [None] * (3 - len(numbers))
    return {"name": name, "strength": _strength(m) if m else None, "dose": numbers[0],
            "frequency": numbers[1] if isinstance(numbers[1], int) else None,
            "days": numbers[2] if isinstance(numbers[2], int) else None}


def _prescription_ko(text: str) -> dict:
    lines = _lines(text)
    out: dict[str, Any] = {}
    out["patient_name"] = _after(r"(?:환자\s*명|성\s*명)", text, HANGUL + "{2,4}")
    m = re.search(r"(?<!\d)(\d{6})\s*-\s*([1-4])", text)  # 주민등록번호, masked after the sex digit
    out["patient_id"] = f"{m.group(1)}-{m.group(2)}******" if m else None
    named = _after(r"명\s*칭", text, r"[가-힣0-9A-Za-z]+(?:의원|병원|센터|보건소)")
    m = KO_INSTITUTION.search(text)
    out["institution"] = named or (m.group(1) if m else None)
    out["issue_date"] = _date(text)
    out["diagnosis_codes"] = _codes(text)
    meds, in_table = [], False
    for line in lines:
        if re.search(r"의약품의?\s*명\s*칭|투약량|투여\s*횟수|투약\s*일수|^용법$", line):
            in_table = True
            continue
        if in_table and re.search(r"주사제|사용기간", line):
            break
        if in_table and (med := _ko_med(line)):
            meds.append(med)
    out["medications"] = meds
    m = re.search(r"(?:의료인의?|처방)\s*(?:성\s*명)?\s*[|}\]]?\s*(" + HANGUL + r"{2,4})(?!" + HANGUL + ")", text)
    labels = {"의료인의", "의료인", "의약품의", "의약품", "성명", "내역", "면허종별", "질병분류"}
    out["prescriber"] = m.group(1) if m and m.group(1) not in labels else None
    return out


def _prescription_zh(text: str) -> dict:
    lines = _lines(text)
    out: dict[str, Any] = {}
    out["patient_name"] = _after(r"姓\s*名", text, HAN + "{2,4}")
    out["patient_id"] = _after(r"门\s*诊\s*号", text, r"[A-Z]{0,2}\d{6,}")
    m = ZH_INSTITUTION.search(text)
    out["institution"] = m.group(0) if m else None
    dated = _after(r"日\s*期", text, r"[\d年月日\-./ ]{8,}")
    out["issue_date"] = _date(dated or text)
    out["diagnosis_codes"] = _codes(text)
    meds: list[dict] = []
    for line in lines:
        m = STRENGTH.search(line)
        if m and re.search(r"[x×X]\s*\d", line[m.end():]):  # "1. 阿莫西林胶囊   0.25 g × 42粒"
            name = re.sub(r"^\W*\d*\s*[.、,]?\s*", "", line[: m.start()]).strip()
            meds.append({"name": name or None, "strength": _strength(m), "dose": None, "frequency": None, "days": None})
        elif meds and "用法" in line:  # "用法:   每次 1 粒   每日 3 次   饭后   共 7 天"
            dose = re.search(r"每次\s*(\d+(?:\.\d+)?)", line)
            freq = re.search(r"每日\s*(\d+)\s*次", line)
            days = re.search(r"共\s*(\d+)\s*天", line)
            meds[-1] |= {"dose": _number(dose.group(1)) if dose else None,
                         "frequency": int(freq.group(1)) if freq else None,
                         "days": int(days.group(1)) if days else None}
    out["medications"] = meds
    out["prescriber"] = _after(r"(?<!药)医\s*师", text, HAN + "{2,4}")
    return out


def _prescription_en(text: str) -> dict:
    return {
        "patient_name": _after(r"(?i:patient(?:\s*name)?|name)", text, r"[A-Z][a-z]+(?: [A-Z][a-z]+)+"),
        "patient_id": _after(r"(?i:patient\s*id|id)", text, r"[A-Z0-9-]{4,}"),
        "issue_date": _date(text),
        "diagnosis_codes": _codes(text),
        "medications": [],
        "prescriber": _after(r"(?i:dr\.?|prescriber|physician)", text, r"[A-Z][a-z]+(?: [A-Z][a-z]+)*"),
    }


# ----------------------------------------------------------------------------- receipts


def _items(lines: list[str], pattern: re.Pattern, order: tuple[int, int, int]) -> list[dict] | None:
    """Item rows matched by `pattern`; `order` = the groups holding (name, quantity, line amount)."""
    items = []
    for line in lines:
        m = pattern.match(line)
        if m:
            name, qty, price = (m.group(i) for i in order)
            items.append({"name": name.strip(), "quantity": int(qty), "price": price})
    return items or None


def _shouting(line: str) -> bool:
    """Printed receipt headers are upper case: most letters capital (a handwritten or misread line is not)."""
    letters = re.findall(r"[A-Za-z]", line)
    return len(letters) >= 4 and sum(c.isupper() for c in letters) >= 0.6 * len(letters)


def _store_like(line: str) -> bool:
    """A shop's name: in capitals or Title Case ("Lucky Cafe"), not a handwritten note ("tan woon yann")."""
    words = re.findall(r"[A-Za-z]+", line)
    return _shouting(line) or (sum(len(w) for w in words) >= 4 and all(w[0].isupper() for w in words))


def _receipt_en(text: str) -> dict:
    lines = _lines(text)
    store_at = next((i for i, line in enumerate(lines) if _store_like(line)), None)
    out: dict[str, Any] = {"store": lines[store_at] if store_at is not None else None}
    address = []
    stop = re.compile(r"TEL|PHONE|FAX|GST|REG|INVOICE|RECEIPT|DATE|CASHIER|\d{1,2}[/-]\d{1,2}[/-]\d{2}", re.IGNORECASE)
    company_no = re.compile(r"^\(?[\w.-]*\d+-?[A-Z]\)?$|CO(?:MPANY|NPANY)?\.?\s*(?:NO|REG)|^\S{1,3}(?:\s+\S{1,3})*$", re.IGNORECASE)
    for line in lines[(store_at or 0) + 1:]:
        if company_no.search(line):
            continue  # the company registration number under the name ("(81109-A)"), or scan specks
        if stop.search(line) or len(address) == 5 or not (_shouting(line) or re.search(r"\d.*[A-Za-z]{3}|[A-Za-z]{3}.*\d", line)):
            break  # an address line is printed in capitals or holds a number (a misread or handwritten line ends it)
        address.append(line)
    out["address"] = " ".join(address) or None
    out["date"] = _date(text)
    out["subtotal"] = _labelled_amount(lines, r"sub\s*-?\s*total")
    out["tax"] = _labelled_amount(lines, r"\b(?:GST|SST|VAT|TAX)\b", exclude=r"reg|invoice|\bid\b|incl|excl|total")
    out["total"] = (_labelled_amount(lines, r"grand\s*total|total\s*amount|amount\s*due|rounded|nett")
                    or _labelled_amount(lines, r"total", exclude=r"sub|excl|qty|quantity|tax|gst\b(?!.*incl)|saving"))
    out["items"] = _items(lines, re.compile(r"^(\d{1,3})\s+(.+?)\s+(\d[\d,]*\.\d{2})$"), (2, 1, 3))
    return out


def _won(value: str | None) -> str | None:
    """Whole won: OCR reads the thousands comma as a dot (24.600) or drops it; print it back as 24,600."""
    if value is None:
        return None
    digits = re.sub(r"[^\d]", "", value)
    return f"{int(digits):,}" if digits else None


def _receipt_ko(text: str) -> dict:
    lines = _lines(text)
    address = re.compile(r"[가-힣]+(?:시|도)\s*[가-힣]+(?:구|군|시)\s*[가-힣0-9]+(?:로|길)\s*\d")
    out: dict[str, Any] = {}
    addr_line = next((line for line in lines if address.search(line)), None)
    out["address"] = addr_line
    first = lines[0] if lines else None
    out["store"] = first if first and first != addr_line and re.search(HANGUL, first) else None
    dated = next((line for line in lines if "판매" in line or "일시" in line), None)
    out["date"] = _date(dated or text)
    amount = lambda labels: _won(_labelled_amount(lines, labels))  # noqa: E731
    out["subtotal"] = amount(r"과세물품가액|공급가액")
    out["tax"] = amount(r"부가가치세|부가세(?:\s*\(VAT\))?")
    out["total"] = amount(r"총\s*합계|합계\s*금액|합계")
    row = re.compile(r"^(" + HANGUL + r"[^\d]*?)\s+([\d,.]+)\s+(\d{1,3})\s+([\d,.]{3,})$")
    items = _items(lines, row, (1, 3, 4))
    out["items"] = [it | {"price": _won(it["price"])} for it in items] if items else None
    return out


def _receipt_zh(text: str) -> dict:
    lines = _lines(text)
    out: dict[str, Any] = {"store": lines[0] if lines else None}
    out["address"] = _after(r"地\s*址", text, r"\S+")
    out["date"] = _date(_after(r"日\s*期", text, r"[\d年月日\-./ ]{8,}") or text)
    out["subtotal"] = _labelled_amount(lines, r"(?:商品)?小\s*计")
    out["tax"] = _labelled_amount([re.sub(r"含税\s*\d+\s*%", "", line) for line in lines], r"税\s*额")
    out["total"] = _labelled_amount(lines, r"(?:应收)?合\s*计(?:金额)?")
    row = re.compile(r"^(" + HAN + r"\S*)\s+(\d{1,3})\s+(\d+\.\d{2})\s+(\d+\.\d{2})$")
    out["items"] = _items(lines, row, (1, 2, 4))
    return out
