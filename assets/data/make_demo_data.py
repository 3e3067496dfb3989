"""Writes the bundled bilingual (English / Korean) demo datasets; run once, outputs are committed.

The facts are small and regular on purpose: a model of a few hundred thousand parameters can
learn them in a minute on a CPU, so a demo run shows a falling loss and a visible change in chat.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

COUNTRIES = [  # (English, Korean, capital EN, capital KO)
    ("France", "프랑스", "Paris", "파리"), ("Japan", "일본", "Tokyo", "도쿄"), ("Korea", "한국", "Seoul", "서울"),
    ("Italy", "이탈리아", "Rome", "로마"), ("Germany", "독일", "Berlin", "베를린"), ("Spain", "스페인", "Madrid", "마드리드"),
    ("China", "중국", "Beijing", "베이징"), ("Egypt", "이집트", "Cairo", "카이로"), ("Canada", "캐나다", "Ottawa", "오타와"),
    ("Peru", "페루", "Lima", "리마"), ("Kenya", "케냐", "Nairobi", "나이로비"), ("Greece", "그리스", "Athens", "아테네"),
]
COLORS = [  # (thing EN, thing KO, color EN, color KO)
    ("the sky", "하늘", "blue", "파란색"), ("grass", "잔디", "green", "초록색"), ("snow", "눈", "white", "흰색"),
    ("a banana", "바나나", "yellow", "노란색"), ("coal", "석탄", "black", "검은색"), ("a tomato", "토마토", "red", "빨간색"),
]
OPPOSITES = [("hot", "cold", "뜨겁다", "차갑다"), ("big", "small", "크다", "작다"), ("fast", "slow", "빠르다", "느리다"),
             ("up", "down", "위", "아래"), ("day", "night", "낮", "밤"), ("old", "new", "낡다", "새롭다")]
NUM_KO = ["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구", "십"]


def _batchim(word: str) -> bool:
    """The word's last syllable ends in a consonant, which picks the particle: 서울은, 파리는."""
    last = word[-1]
    return "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0


def topic(word: str) -> str:  # 은/는
    return word + ("은" if _batchim(word) else "는")


def obj(word: str) -> str:  # 을/를
    return word + ("을" if _batchim(word) else "를")


def sums(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """`n` different additions of two numbers 0..5: a repeated row would only be a duplicate warning."""
    return rng.sample([(x, y) for x in range(6) for y in range(6)], n)


def sft_rows(rng: random.Random) -> list[dict]:
    rows = []
    for en, ko, cap, cap_ko in COUNTRIES:
        rows.append({"instruction": f"What is the capital of {en}?", "input": "", "output": f"The capital of {en} is {cap}."})
        rows.append({"instruction": f"{ko}의 수도는 어디인가요?", "input": "", "output": f"{ko}의 수도는 {cap_ko}입니다."})
        rows.append({"instruction": "Answer with the capital city.", "input": en, "output": cap})
    for thing, thing_ko, color, color_ko in COLORS:
        rows.append({"instruction": f"What color is {thing}?", "input": "", "output": f"{thing.capitalize()} is {color}."})
        rows.append({"instruction": f"{topic(thing_ko)} 무슨 색인가요?", "input": "", "output": f"{topic(thing_ko)} {color_ko}입니다."})
    for a, b, a_ko, b_ko in OPPOSITES:
        rows.append({"instruction": "Give the opposite word.", "input": a, "output": b})
        rows.append({"instruction": "반대말을 말해 주세요.", "input": a_ko, "output": b_ko})
    for x, y in sums(rng, 30):
        rows.append({"instruction": f"What is {x} plus {y}?", "input": "", "output": f"{x} plus {y} is {x + y}."})
    for x, y in sums(rng, 20):
        question = f"{NUM_KO[x]} 더하기 {topic(NUM_KO[y])}"
        rows.append({"instruction": f"{question}?", "input": "", "output": f"{question} {NUM_KO[x + y]}입니다."})
    rows.append({"instruction": "Say hello.", "input": "", "output": "Hello! How can I help you today?"})
    rows.append({"instruction": "인사해 주세요.", "input": "", "output": "안녕하세요! 무엇을 도와드릴까요?"})
    rows.append({"instruction": "Who are you?", "input": "", "output": "I am Tuneboard's demo assistant."})
    rows.append({"instruction": "당신은 누구인가요?", "input": "", "output": "저는 Tuneboard 데모 도우미입니다."})
    rng.shuffle(rows)
    return rows


def dpo_rows(rng: random.Random) -> list[dict]:
    rows = []
    for en, ko, cap, cap_ko in COUNTRIES:
        wrong = rng.choice([c for c in COUNTRIES if c[2] != cap])
        rows.append({"prompt": f"What is the capital of {en}?", "chosen": f"The capital of {en} is {cap}.",
                     "rejected": f"I don't know. Maybe {wrong[2]}."})
        rows.append({"prompt": f"{ko}의 수도는 어디인가요?", "chosen": f"{ko}의 수도는 {cap_ko}입니다.",
                     "rejected": f"모르겠어요. 아마 {wrong[3]}?"})
    for thing, thing_ko, color, color_ko in COLORS:
        rows.append({"prompt": f"What color is {thing}?", "chosen": f"{thing.capitalize()} is {color}.",
                     "rejected": "Why would I tell you that?"})
        rows.append({"prompt": f"{topic(thing_ko)} 무슨 색인가요?", "chosen": f"{topic(thing_ko)} {color_ko}입니다.",
                     "rejected": "그런 건 직접 찾아보세요."})
    rng.shuffle(rows)
    return rows


def pt_text(rng: random.Random) -> str:
    paras = []
    for en, ko, cap, cap_ko in COUNTRIES:
        paras.append(f"{en} is a country. The capital of {en} is {cap}. Many people visit {cap} every year.")
        paras.append(f"{topic(ko)} 나라입니다. {ko}의 수도는 {cap_ko}입니다. 매년 많은 사람들이 {obj(cap_ko)} 방문합니다.")
    for thing, thing_ko, color, color_ko in COLORS:
        paras.append(f"Look at {thing}. {thing.capitalize()} is {color}. Everyone knows that {thing} is {color}.")
        paras.append(f"{obj(thing_ko)} 보세요. {topic(thing_ko)} {color_ko}입니다.")
    rng.shuffle(paras)
    return "\n\n".join(paras) + "\n"


def main() -> None:
    rng = random.Random(0)
    (HERE / "demo_sft.json").write_text(json.dumps(sft_rows(rng), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (HERE / "demo_dpo.json").write_text(json.dumps(dpo_rows(rng), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (HERE / "demo_pt.txt").write_text(pt_text(rng), encoding="utf-8")


if __name__ == "__main__":
    main()
