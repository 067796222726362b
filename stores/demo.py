"""A demo city for development: pharmacies around People's Square, Shanghai, a catalogue of common
generic medicines, and stock in lots. Idempotent: stores are found by name, products by GTIN, and
each store's stock is pushed once under a fixed sync id."""

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o import clock
from stores import inventory, service
from stores.models import Lot, Product, Store
from stores.schemas import InventoryIn, ProductIn, StoreIn, gtin_check_digit

CITY_CENTRE = (31.2304, 121.4737)  # People's Square
TIMEZONE = "Asia/Shanghai"
CURRENCY = "CNY"
SYNC_ID = "demo-seed-1"
METRES_PER_DEGREE = 111_320.0

DAILY_8_TO_22 = tuple({"weekday": d, "opens": "08:00", "closes": "22:00"} for d in range(7))
WEEKDAYS_LONG = (
    *({"weekday": d, "opens": "08:00", "closes": "22:00"} for d in range(5)),
    *({"weekday": d, "opens": "09:00", "closes": "21:00"} for d in (5, 6)),
)
DAYTIME_ONLY = tuple({"weekday": d, "opens": "09:00", "closes": "19:00"} for d in range(6))
NIGHT_PHARMACY = tuple({"weekday": d, "opens": "20:00", "closes": "08:00"} for d in range(7))
ALWAYS_OPEN = None


@dataclass(frozen=True)
class DemoStore:
    name: str
    address: str
    lat: float
    lon: float
    hours: tuple[dict, ...] | None = DAILY_8_TO_22
    zone_km: float | None = 4.0  # None: pickup only
    prep_minutes: int = 10


STORES = (
    DemoStore("Renhe Pharmacy People's Square (24 h)", "120 Xizang Road Middle, Huangpu", 31.2304, 121.4737, ALWAYS_OPEN, 5.0, 8),
    DemoStore("Kangtai Pharmacy Nanjing Road East", "358 Nanjing Road East, Huangpu", 31.2355, 121.4800),
    DemoStore("Yikang Pharmacy The Bund", "27 Zhongshan Road East 1st, Huangpu", 31.2400, 121.4900, WEEKDAYS_LONG, 3.0),
    DemoStore("Baicao Pharmacy Xintiandi", "181 Taicang Road, Huangpu", 31.2197, 121.4755, WEEKDAYS_LONG, 3.5),
    DemoStore("Shoukang Pharmacy Jing'an Temple", "1618 Nanjing Road West, Jing'an", 31.2235, 121.4455),
    DemoStore("Renhe Pharmacy Lujiazui (24 h)", "168 Lujiazui Ring Road, Pudong", 31.2397, 121.4998, ALWAYS_OPEN, 5.0, 8),
    DemoStore("Kangtai Pharmacy Yuyuan Garden", "269 Fangbang Road Middle, Huangpu", 31.2272, 121.4921, DAYTIME_ONLY, None),
    DemoStore("Yikang Pharmacy Huaihai Road", "755 Huaihai Road Middle, Huangpu", 31.2170, 121.4600),
    DemoStore("Baicao Pharmacy Xujiahui", "1111 Zhaojiabang Road, Xuhui", 31.1950, 121.4370, WEEKDAYS_LONG, 4.5),
    DemoStore("Shoukang Pharmacy Zhongshan Park", "1018 Changning Road, Changning", 31.2230, 121.4170),
    DemoStore("Renhe Pharmacy Hongkou Stadium", "444 Dongjiangwan Road, Hongkou", 31.2710, 121.4800, WEEKDAYS_LONG, 4.0),
    DemoStore("Kangtai Pharmacy North Bund", "88 Dongdaming Road, Hongkou", 31.2500, 121.4950),
    DemoStore("Yikang Pharmacy Century Avenue", "1568 Century Avenue, Pudong", 31.2290, 121.5270, DAILY_8_TO_22, 4.5, 12),
    DemoStore("Baicao Pharmacy Railway Station", "303 Moling Road, Jing'an", 31.2495, 121.4560, NIGHT_PHARMACY, 3.0),
    DemoStore("Shoukang Pharmacy Tianzifang", "210 Taikang Road, Huangpu", 31.2085, 121.4690, DAYTIME_ONLY, 3.0),
    DemoStore("Renhe Pharmacy Laoximen", "2 Fuxing Road East, Huangpu", 31.2210, 121.4850),
    DemoStore("Kangtai Pharmacy Wujiaochang", "8 Songhu Road, Yangpu", 31.3000, 121.5130, WEEKDAYS_LONG, 5.0, 15),
    DemoStore("Yikang Pharmacy Longhua", "2853 Longhua Road, Xuhui", 31.1800, 121.4500, DAILY_8_TO_22, 4.0, 12),
    DemoStore("Baicao Pharmacy Changshou Road", "155 Changshou Road, Putuo", 31.2420, 121.4380),
    DemoStore("Shoukang Pharmacy Dapuqiao", "350 Xujiahui Road, Huangpu", 31.2050, 121.4640, WEEKDAYS_LONG, None),
    DemoStore("Renhe Pharmacy Century Park", "1001 Jinxiu Road, Pudong", 31.2170, 121.5510, DAILY_8_TO_22, 5.0, 12),
    DemoStore("Kangtai Pharmacy Zhabei Park", "1555 Gonghexin Road, Jing'an", 31.2680, 121.4550),
    DemoStore("Yikang Pharmacy South Xizang Road", "1000 Xizang Road South, Huangpu", 31.2120, 121.4900, DAILY_8_TO_22, 3.5),
    DemoStore("Baicao Pharmacy West Nanjing Road", "1266 Nanjing Road West, Jing'an", 31.2290, 121.4550, WEEKDAYS_LONG, 3.0),
    DemoStore("Shoukang Pharmacy Cool Docks", "505 Zhongshan Road South, Huangpu", 31.2130, 121.5050),
)  # fmt: skip


@dataclass(frozen=True)
class Medicine:
    generic_name: str
    strength: str
    dosage_form: str
    packs: tuple[int, ...]
    price_minor: int  # of the smallest pack, before each store's own margin
    rx_only: bool = False
    controlled: bool = False
    max_per_order: int | None = None
    # A branded product of the generic: an equivalent of the generic's packs (stores.equivalents).
    brand: str | None = None


RX = {"rx_only": True}
CONTROLLED = {"rx_only": True, "controlled": True}

MEDICINES = (
    # Pain and fever; paracetamol packs are limited per order, as pharmacies do.
    Medicine("paracetamol", "500 mg", "tablets", (10, 20, 24), 650, max_per_order=4),
    Medicine("paracetamol", "650 mg", "extended-release tablets", (18,), 1590, max_per_order=4),
    Medicine("paracetamol", "120 mg/5 ml", "oral suspension", (1,), 1880, max_per_order=2),
    Medicine("ibuprofen", "200 mg", "tablets", (12, 24, 48), 890),
    Medicine("ibuprofen", "300 mg", "sustained-release capsules", (20,), 1650),
    Medicine("ibuprofen", "100 mg/5 ml", "oral suspension", (1,), 2350),
    Medicine("aspirin", "100 mg", "enteric-coated tablets", (30, 60), 1580),
    Medicine("diclofenac", "1%", "gel", (1,), 2680),
    # Colds, allergy, coughs; pseudoephedrine products are limited per order.
    Medicine("loratadine", "10 mg", "tablets", (6, 12), 1850),
    Medicine("cetirizine", "10 mg", "tablets", (7, 14), 1990),
    Medicine("loratadine and pseudoephedrine", "5 mg/120 mg", "tablets", (6, 12), 2480, max_per_order=2),
    Medicine("dextromethorphan", "15 mg/5 ml", "syrup", (1,), 2180, max_per_order=2),
    Medicine("guaifenesin", "100 mg/5 ml", "syrup", (1,), 1960),
    Medicine("ambroxol", "30 mg", "tablets", (20, 40), 1280),
    Medicine("isatis root", "10 g", "granules", (10, 20), 1500),
    Medicine("sodium chloride", "0.9%", "nasal spray", (1,), 2900),
    # Stomach and gut.
    Medicine("loperamide", "2 mg", "capsules", (6, 12), 1380),
    Medicine("diosmectite", "3 g", "oral powder sachets", (10,), 2100),
    Medicine("oral rehydration salts", "5.125 g", "sachets", (6, 12), 980),
    Medicine("famotidine", "20 mg", "tablets", (12, 24), 1150),
    Medicine("omeprazole", "20 mg", "enteric-coated capsules", (7, 14), 1680),
    Medicine("calcium carbonate", "500 mg", "chewable tablets", (36, 72), 1480),
    Medicine("domperidone", "10 mg", "tablets", (30,), 1860),
    Medicine("bisacodyl", "5 mg", "enteric-coated tablets", (20,), 980),
    Medicine("lactulose", "667 mg/ml", "oral solution", (1,), 4280),
    Medicine("naproxen", "250 mg", "tablets", (10, 20), 1180),
    Medicine("chlorphenamine", "4 mg", "tablets", (20, 100), 350),
    # Skin and eyes.
    Medicine("clotrimazole", "1%", "cream", (1,), 1250),
    Medicine("hydrocortisone", "1%", "cream", (1,), 1390),
    Medicine("mupirocin", "2%", "ointment", (1,), 2650, **RX),
    Medicine("sodium hyaluronate", "0.1%", "eye drops", (1,), 3580),
    Medicine("terbinafine", "1%", "cream", (1,), 1850),
    Medicine("povidone-iodine", "5%", "topical solution", (1,), 890),
    Medicine("ferrous succinate", "100 mg", "tablets", (24,), 1560),
    Medicine("nicotine", "2 mg", "medicated chewing gum", (30, 105), 6800),
    # Vitamins and supplements.
    Medicine("ascorbic acid", "100 mg", "tablets", (100,), 600),
    Medicine("colecalciferol", "400 IU", "soft capsules", (30, 60), 2880),
    Medicine("folic acid", "0.4 mg", "tablets", (31, 93), 1980),
    Medicine("multivitamin and minerals", "", "tablets", (30, 60), 6800),
    # Antibiotics: prescription only.
    Medicine("amoxicillin", "250 mg", "capsules", (24, 50), 1050, **RX),
    Medicine("amoxicillin", "500 mg", "capsules", (12, 24), 1450, **RX),
    Medicine("amoxicillin", "125 mg/5 ml", "dry suspension", (1,), 1680, **RX),
    Medicine("amoxicillin and clavulanic acid", "625 mg", "tablets", (14,), 4280, **RX),
    Medicine("azithromycin", "250 mg", "tablets", (6,), 2650, **RX),
    Medicine("azithromycin", "500 mg", "tablets", (3,), 2980, **RX),
    Medicine("cefuroxime axetil", "250 mg", "tablets", (12,), 3680, **RX),
    Medicine("cefalexin", "250 mg", "capsules", (24,), 1380, **RX),
    Medicine("levofloxacin", "500 mg", "tablets", (4, 10), 2260, **RX),
    Medicine("metronidazole", "200 mg", "tablets", (21,), 680, **RX),
    # Chronic conditions: prescription only.
    Medicine("amlodipine", "5 mg", "tablets", (7, 28), 1580, **RX),
    Medicine("amlodipine", "10 mg", "tablets", (28,), 3860, **RX),
    Medicine("nifedipine", "30 mg", "controlled-release tablets", (7, 14), 3380, **RX),
    Medicine("losartan", "50 mg", "tablets", (7, 28), 2160, **RX),
    Medicine("valsartan", "80 mg", "capsules", (7, 28), 2580, **RX),
    Medicine("metoprolol succinate", "47.5 mg", "extended-release tablets", (7, 28), 2380, **RX),
    Medicine("atorvastatin", "20 mg", "tablets", (7, 28), 2890, **RX),
    Medicine("rosuvastatin", "10 mg", "tablets", (7, 28), 3150, **RX),
    Medicine("metformin", "500 mg", "tablets", (20, 60), 980, **RX),
    Medicine("metformin", "850 mg", "tablets", (60,), 2480, **RX),
    Medicine("gliclazide", "30 mg", "modified-release tablets", (30, 60), 3260, **RX),
    Medicine("levothyroxine", "50 µg", "tablets", (100,), 2980, **RX),
    Medicine("salbutamol", "100 µg/dose", "inhaler, 200 doses", (1,), 2850, **RX),
    Medicine("montelukast", "10 mg", "tablets", (5, 30), 3480, **RX),
    Medicine("prednisone", "5 mg", "tablets", (100,), 1250, **RX),
    Medicine("clopidogrel", "75 mg", "tablets", (7, 28), 4580, **RX),
    Medicine("warfarin", "2.5 mg", "tablets", (80,), 2250, **RX),
    Medicine("sertraline", "50 mg", "tablets", (14, 28), 4680, **RX),
    Medicine("escitalopram", "10 mg", "tablets", (7, 28), 5280, **RX),
    Medicine("allopurinol", "100 mg", "tablets", (100,), 1180, **RX),
    Medicine("sildenafil", "50 mg", "tablets", (1, 5), 4990, **RX),
    Medicine("ciprofloxacin", "250 mg", "tablets", (10, 20), 980, **RX),
    Medicine("clarithromycin", "250 mg", "tablets", (6, 12), 2160, **RX),
    Medicine("doxycycline", "100 mg", "tablets", (10,), 1280, **RX),
    Medicine("fluconazole", "150 mg", "capsules", (1,), 1880, **RX),
    Medicine("aciclovir", "200 mg", "tablets", (24,), 1350, **RX),
    Medicine("oseltamivir", "75 mg", "capsules", (10,), 7850, **RX),
    Medicine("enalapril", "10 mg", "tablets", (16, 32), 1260, **RX),
    Medicine("hydrochlorothiazide", "25 mg", "tablets", (100,), 980, **RX),
    Medicine("bisoprolol", "5 mg", "tablets", (10, 28), 1980, **RX),
    Medicine("simvastatin", "20 mg", "tablets", (7, 28), 1480, **RX),
    Medicine("glimepiride", "2 mg", "tablets", (15, 30), 2360, **RX),
    Medicine("pantoprazole", "40 mg", "enteric-coated tablets", (7, 14), 2680, **RX),
    Medicine("tamsulosin", "0.2 mg", "modified-release capsules", (10, 30), 3980, **RX),
    Medicine("fluoxetine", "20 mg", "capsules", (14, 28), 3350, **RX),
    Medicine("budesonide", "64 µg/dose", "nasal spray, 120 doses", (1,), 6580, **RX),
    Medicine("insulin glargine", "300 units/3 ml", "pre-filled pens", (1, 5), 18900, **RX),
    # Controlled: shown in the catalogue, sold in the store only, never online.
    Medicine("paracetamol and codeine", "500 mg/30 mg", "tablets", (20,), 2380, **CONTROLLED),
    Medicine("codeine phosphate and chlorphenamine", "10 mg/2 mg per 5 ml", "oral solution", (1,), 3280, **CONTROLLED),
    Medicine("tramadol", "50 mg", "capsules", (10,), 1860, **CONTROLLED),
    Medicine("diazepam", "2.5 mg", "tablets", (20,), 980, **CONTROLLED),
    Medicine("alprazolam", "0.4 mg", "tablets", (24,), 1560, **CONTROLLED),
    Medicine("zolpidem", "10 mg", "tablets", (7, 14), 3160, **CONTROLLED),
    Medicine("methylphenidate", "18 mg", "extended-release tablets", (15,), 14800, **CONTROLLED),
    # Brands: equivalents of the generics above (same generic, strength, form and route), priced
    # higher; listed last so the earlier products keep their GTINs.
    Medicine("paracetamol", "500 mg", "tablets", (20,), 1280, max_per_order=4, brand="Panadol"),
    Medicine("ibuprofen", "200 mg", "tablets", (24,), 1590, brand="Advil"),
    Medicine("loratadine", "10 mg", "tablets", (6,), 2580, brand="Clarityne"),
    Medicine("omeprazole", "20 mg", "enteric-coated capsules", (14,), 2980, brand="Losec"),
    Medicine("amlodipine", "5 mg", "tablets", (28,), 3980, brand="Norvasc", **RX),
)  # fmt: skip


@dataclass(frozen=True)
class DemoProduct:
    data: ProductIn
    price_minor: int


def demo_products() -> list[DemoProduct]:
    """Every pack of every medicine, with a stable GTIN (a 690 prefix and a valid check digit)."""
    products = []
    for medicine in MEDICINES:
        for pack in medicine.packs:
            body = f"6901{len(products) + 1:08d}"
            label = medicine.generic_name.capitalize()
            name = " ".join(filter(None, (label, medicine.strength, medicine.dosage_form)))
            if medicine.brand:
                name = f"{medicine.brand} ({name.lower()})"
            products.append(
                DemoProduct(
                    ProductIn(
                        name=f"{name}, pack of {pack}" if pack > 1 else name,
                        generic_name=medicine.generic_name,
                        strength=medicine.strength or "-",
                        dosage_form=medicine.dosage_form,
                        pack_size=pack,
                        gtin=body + str(gtin_check_digit(body)),
                        rx_only=medicine.rx_only,
                        controlled=medicine.controlled,
                        max_per_order=medicine.max_per_order,
                    ),
                    # Bigger packs cost less per unit.
                    price_minor=int(medicine.price_minor * (pack / medicine.packs[0]) ** 0.8),
                )
            )
    return products


def zone_around(lat: float, lon: float, radius_km: float, sides: int = 24) -> dict:
    """Return a GeoJSON Polygon approximating a circle (good enough at city scale)."""
    dlat = radius_km * 1000 / METRES_PER_DEGREE
    dlon = dlat / math.cos(math.radians(lat))
    ring = [
        [
            round(lon + dlon * math.cos(2 * math.pi * i / sides), 6),
            round(lat + dlat * math.sin(2 * math.pi * i / sides), 6),
        ]
        for i in range(sides)
    ]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _store_in(demo: DemoStore) -> StoreIn:
    return StoreIn(
        name=demo.name,
        address=f"{demo.address}, Shanghai",
        location={"lat": demo.lat, "lon": demo.lon},
        timezone=TIMEZONE,
        opening_hours=None if demo.hours is None else list(demo.hours),
        services=["pickup", "delivery"] if demo.zone_km else ["pickup"],
        prep_minutes=demo.prep_minutes,
        delivery_fee_minor=600 if demo.zone_km else 0,
        currency=CURRENCY,
        delivery_zone=zone_around(demo.lat, demo.lon, demo.zone_km) if demo.zone_km else None,
    )


def _stock(store_name: str, products: list[tuple[Product, int]], today: date) -> InventoryIn:
    """Make a store's stock: most products, one or two lots each, some expiring within 30 days."""
    rng = random.Random(store_name)  # the same stock for the same store, run after run
    margin = rng.uniform(0.95, 1.12)
    lots = []
    for product, price in products:
        if rng.random() > 0.75:
            continue
        for n in range(rng.choice((1, 1, 2))):
            soon = rng.random() < 0.12
            days = rng.randint(3, 29) if soon else rng.randint(60, 900)
            lots.append(
                {
                    "product_id": product.id,
                    "lot_number": f"{product.gtin[-6:]}-{today:%y%m}-{n + 1}",
                    "expiry_date": today + timedelta(days=days),
                    "on_hand": rng.choice((0, 2, 5, 8, 12, 20, 30, 50)),
                    "price_minor": round(price * margin),
                    "currency": CURRENCY,
                }
            )
    return InventoryIn(sync_id=SYNC_ID, lots=lots)


@dataclass(frozen=True)
class DemoCity:
    store_ids: list[int]
    stores_created: int
    products: int
    products_created: int
    stock_synced: int  # stores whose stock was pushed this run
    lots: int

    def summary(self) -> str:
        return (
            f"Demo city (Shanghai, People's Square): {len(self.store_ids)} stores "
            f"({self.stores_created} new), {self.products} products ({self.products_created} "
            f"new), {self.lots} lots (stock pushed to {self.stock_synced} store(s) this run)."
        )


def load_demo_city(session: Session, *, today: date | None = None) -> DemoCity:
    """Create what is missing of the demo city; return what it holds."""
    today = today or clock.today(TIMEZONE)
    existing = {
        store.name: store
        for store in session.scalars(
            select(Store).where(Store.name.in_([demo.name for demo in STORES]))
        )
    }
    stores = [
        existing.get(demo.name) or service.create_store(session, _store_in(demo)) for demo in STORES
    ]

    catalogue = demo_products()
    known = {
        product.gtin: product
        for product in session.scalars(
            select(Product).where(Product.gtin.in_([p.data.gtin for p in catalogue]))
        )
    }
    products = [
        (known.get(p.data.gtin) or service.create_product(session, p.data), p.price_minor)
        for p in catalogue
    ]

    synced = sum(
        inventory.apply_inventory_sync(session, store, _stock(store.name, products, today)).applied
        for store in stores
    )
    store_ids = [store.id for store in stores]
    lot_count = session.scalar(select(func.count(Lot.id)).where(Lot.store_id.in_(store_ids)))
    return DemoCity(
        store_ids=store_ids,
        stores_created=len(STORES) - len(existing),
        products=len(products),
        products_created=len(catalogue) - len(known),
        stock_synced=synced,
        lots=lot_count,
    )
