"""Small built-in English word lists (RULER draws keys from ``wonderwords``; we ship our own, no download).

Keys for the needle tasks are ``adjective-noun`` pairs as in RULER (about 30k combinations).
The common/frequent-words tasks need thousands of distinct words at long lengths, more than these
lists hold, so they add the whole-word entries of the model's own tokenizer vocabulary.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ADJECTIVES = _split("""
able acid angry aware awful bad bald basic bitter black blue bold bored brave brief bright broad broken
brown busy calm cheap chief clean clear clever close cold cool crazy cruel curly cute damp dark dead deep
dense dizzy dry dull eager early easy empty equal even evil exact faint fair false famous fancy fast fat
fierce final fine firm flat fluffy foggy fond free fresh full funny fuzzy gentle giant glad gold good grand
gray great green grim gross guilty hairy happy hard harsh heavy high hollow honest huge humble hungry icy
idle ill inner jolly juicy keen kind large late lazy lean legal level light little lively lonely long loose
loud lovely low loyal lucky mad major mean mild minor misty modern moist narrow nasty neat new nice noble
noisy normal odd old open orange pale plain plump polite poor pretty proud pure purple quick quiet rapid
rare raw ready real red rich rigid ripe rough round royal rude rusty sad safe salty sandy scary sharp shiny
short shy silent silly simple slim slow small smart smooth snowy soft solid sour spicy stale steep sticky
stiff strange strict strong sunny super sweet swift tall tame tender thick thin tidy tiny tough upset vast
warm weak weary wet white whole wide wild windy wise witty wooden young zany
""")

NOUNS = _split("""
actor airport anchor angle animal apple arch army arrow artist attic author badge bakery balloon banana
bank barn basket beach bean bear bed bee bell belt bench berry bicycle bird blanket boat book boot bottle
box branch bread brick bridge brush bucket butter button cabin cable cake camera camp candle canoe canyon
car carpet castle cat cave chair chalk cheese cherry chest chicken church circle city cliff clock cloud
coat coffee coin comet cookie copper corn cotton couch cow crab crayon crown cup curtain desk diamond
dinner doctor dog doll dolphin door dragon drawer dress drum duck eagle engine farm feather fence field
finger fire fish flag flower flute forest fork fountain fox frog garden garlic gate ghost giraffe glass
glove goat grape guitar hammer harbor hat helmet hill honey horse hotel house island jacket jar jelly
jungle kettle key kitten kite knife ladder lake lamp lemon letter library lion lizard lock magnet mango
map marble market meadow mirror monkey moon mountain mouse museum needle nest ocean office onion orchard
owl oyster paint palace panda paper parrot peach pencil pepper piano pillow pirate planet plate pocket
pond potato pumpkin puppet rabbit radio rainbow river robot rocket roof rose sailor salad sandal school
scissors shark sheep shell ship shoe silver sky snake soap sock spoon square squirrel stamp star statue
stone storm street sugar sun swan table teacher tiger toast tomato tower town toy tractor train tree
truck trumpet tulip tunnel turtle umbrella valley vase violin wagon wall wallet whale wheel window wolf
""")

VERBS = _split("""
accept admire argue arrive bake balance bathe battle beg behave belong blink boil borrow bounce breathe
build bump burn bury calculate carry catch cheer chew clap climb collect comb complain cook copy count
crawl cross cry dance decide deliver dig divide draw dream drink drive earn enjoy escape explain fetch
fill find fix float fly fold follow gather glow grab greet grow guard guess hammer hang help hide hop hug
hunt hurry imagine invent iron jog join juggle jump kick kneel knit knock laugh learn lift listen march
marry measure melt mix move nod obey offer open paint pack paddle pause peel pick plant play point pour
pray print promise pull punch push race rain reach read relax remember repair rescue rest ride ring roll
row rub run sail scream search shake share shave shine shout sing skate ski sleep slide smell smile sneeze
snore solve sort spell spill spin splash squeeze stamp stand stare start steer stir stretch study swim
swing talk taste teach tease thank throw tickle tie touch trace trade travel trip trust turn twist type
wander want warn wash watch wave weigh whisper whistle wink wish wonder work worry wrap write yawn yell zip
""")


def key_words() -> list[str]:
    """RULER-style needle keys: every ``adjective-noun`` pair, in a fixed order."""
    return [f"{a}-{n}" for a in ADJECTIVES for n in NOUNS]


_WORD = re.compile(r"^[a-z]{3,12}$")


def vocabulary_words(tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """Distinct lower-case English-looking words: the built-in lists plus whole-word tokenizer entries.

    Sorted so that the pool, and hence a seeded sample from it, is reproducible for a tokenizer.
    """
    words = set(ADJECTIVES) | set(NOUNS) | set(VERBS)
    if tokenizer is not None:
        for token in tokenizer.get_vocab():
            text = tokenizer.convert_tokens_to_string([token])
            if text.startswith(" ") and _WORD.match(text[1:]):
                words.add(text[1:])
    return sorted(words)
