"""Retrieval quality: questions whose answers sit in known chunks of a small corpus; hybrid
search with the local MiniLM embedder must put the answer in the top 5 for ≥ 90% of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Stack, _start_stack
from tests.integration.knowledge_files import create_base, ingest

# (section title, answer sentence, question phrased differently, answer marker)
FACTS = [
    ("Boiler room", "The boiler is serviced every October by a certified technician.",
     "When does the heating equipment get its maintenance?", "every October"),
    ("Parking", "Visitors park in the gravel lot behind the warehouse, never at the dock.",
     "Where should guests leave their cars?", "gravel lot"),
    ("Wi-Fi", "The guest wireless password rotates each Monday and is printed at reception.",
     "How often does the visitor network passphrase change?", "each Monday"),
    ("Fire drills", "Fire drills happen on the first Thursday of each quarter at 10 am.",
     "On which day are evacuation exercises held?", "first Thursday"),
    ("Lunch", "The canteen serves vegetarian curry on Wednesdays.",
     "What meat-free dish is offered midweek in the cafeteria?", "vegetarian curry"),
    ("Badges", "Lost access badges are replaced by the security desk on floor two.",
     "Who issues a new entry card if mine goes missing?", "security desk"),
    ("Expenses", "Travel expenses must be filed within thirty days of the trip.",
     "What is the deadline for submitting reimbursement claims after travelling?",
     "thirty days"),
    ("Backups", "Database backups are copied to a second region every six hours.",
     "How frequently are database copies replicated offsite?", "six hours"),
    ("On-call", "The on-call engineer must acknowledge pages within five minutes.",
     "How quickly must an alert be acknowledged by the person on duty?", "five minutes"),
    ("Releases", "Production releases are frozen during the last week of December.",
     "When are deployments to production paused for the holidays?", "last week of December"),
    ("Laptops", "Laptops are refreshed every three years, or sooner if they fail.",
     "How old does a work computer get before it is replaced?", "three years"),
    ("Bicycles", "Bicycles may be stored in the basement cage with a registered lock.",
     "Where can I keep my bike during the day?", "basement cage"),
    ("Printing", "Colour printing requires a manager's approval code.",
     "What do I need to print documents in colour?", "approval code"),
    ("Plants", "The office plants are watered by a contractor on Tuesday mornings.",
     "Who takes care of the greenery in the office and when?", "Tuesday mornings"),
    ("Holidays", "Employees receive twenty-five days of paid leave per year.",
     "How much annual vacation do staff get?", "twenty-five days"),
    ("Mentoring", "Every new hire is paired with a mentor for their first ninety days.",
     "How long does the onboarding buddy programme last?", "ninety days"),
    ("Encryption", "Customer data at rest is encrypted with AES-256 keys rotated yearly.",
     "Which cipher protects stored client information?", "AES-256"),
    ("Meeting rooms", "The large meeting room seats eighteen people and has a projector.",
     "How many people fit in the biggest conference room?", "eighteen people"),
    ("Recycling", "Batteries go into the red bin next to the mail room.",
     "Where do I dispose of used batteries?", "red bin"),
    ("Coffee", "The espresso machine is descaled every Friday afternoon.",
     "When is the coffee maker cleaned of limescale?", "Friday afternoon"),
]

FILLER = ("This section of the office handbook was reviewed by the operations team. "
          "Questions about it go to the facilities channel, which is read during office "
          "hours. Exceptions are rare and need a written request. ")


def _corpus() -> dict[str, bytes]:
    """Four markdown documents of five sections each."""
    files = {}
    for part in range(4):
        sections = [f"## {title}\n\n{FILLER}{answer} {FILLER}"
                    for title, answer, _, _ in FACTS[part * 5:(part + 1) * 5]]
        files[f"handbook-{part + 1}.md"] = (f"# Handbook part {part + 1}\n\n"
                                            + "\n\n".join(sections)).encode()
    return files


@pytest.fixture(scope="module")
def recall_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                 redis_url: str) -> Iterator[Stack]:
    files: Path = tmp_path_factory.mktemp("recall-files")
    stack = _start_stack(tmp_path_factory.mktemp("recall"), database_url, redis_url,
                         env={"FILE_STORE_DIR": str(files), "EMBEDDING_PROVIDER": "local"})
    yield stack
    stack.stop()


def test_hybrid_search_recalls_the_answer_chunk_in_the_top_5(recall_stack: Stack) -> None:
    with httpx.Client(base_url=recall_stack.base_url, headers=recall_stack.headers,
                      timeout=60) as http:
        base = create_base(http, name="handbook")
        for filename, content in _corpus().items():
            assert ingest(http, base["id"], filename, content)["status"] == "processed"
        misses = []
        for _, _, question, marker in FACTS:
            response = http.post("/v1/knowledge/search", json={
                "query": question, "knowledge_ids": [base["id"]], "mode": "hybrid",
                "limit": 5})
            assert response.status_code == 200, response.text
            if not any(marker in r["content"] for r in response.json()["results"]):
                misses.append(question)
    recall = 1 - len(misses) / len(FACTS)
    assert recall >= 0.9, f"recall@5 = {recall:.2f}; missed: {misses}"
