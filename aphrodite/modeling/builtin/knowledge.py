"""Fact tables the built-in model's training text is generated from.

All entries are common knowledge written for this project (no third-party text). ``FICTIONAL_FACTS``
describes made-up things: they never enter the training text, so later learning work can teach them
and check they were learned.
"""

from __future__ import annotations

# (country, capital, continent, language)
COUNTRIES = [
    ("France", "Paris", "Europe", "French"), ("Germany", "Berlin", "Europe", "German"),
    ("Italy", "Rome", "Europe", "Italian"), ("Spain", "Madrid", "Europe", "Spanish"),
    ("Portugal", "Lisbon", "Europe", "Portuguese"), ("Greece", "Athens", "Europe", "Greek"),
    ("Poland", "Warsaw", "Europe", "Polish"), ("Sweden", "Stockholm", "Europe", "Swedish"),
    ("Norway", "Oslo", "Europe", "Norwegian"), ("Finland", "Helsinki", "Europe", "Finnish"),
    ("Denmark", "Copenhagen", "Europe", "Danish"), ("Ireland", "Dublin", "Europe", "English"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch"), ("Austria", "Vienna", "Europe", "German"),
    ("Hungary", "Budapest", "Europe", "Hungarian"), ("Russia", "Moscow", "Europe", "Russian"),
    ("Ukraine", "Kyiv", "Europe", "Ukrainian"), ("Turkey", "Ankara", "Asia", "Turkish"),
    ("Japan", "Tokyo", "Asia", "Japanese"), ("China", "Beijing", "Asia", "Chinese"),
    ("India", "New Delhi", "Asia", "Hindi"), ("South Korea", "Seoul", "Asia", "Korean"),
    ("Thailand", "Bangkok", "Asia", "Thai"), ("Vietnam", "Hanoi", "Asia", "Vietnamese"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian"), ("Iran", "Tehran", "Asia", "Persian"),
    ("Egypt", "Cairo", "Africa", "Arabic"), ("Kenya", "Nairobi", "Africa", "Swahili"),
    ("Nigeria", "Abuja", "Africa", "English"), ("Morocco", "Rabat", "Africa", "Arabic"),
    ("Ethiopia", "Addis Ababa", "Africa", "Amharic"), ("Ghana", "Accra", "Africa", "English"),
    ("Canada", "Ottawa", "North America", "English"), ("Mexico", "Mexico City", "North America", "Spanish"),
    ("the United States", "Washington", "North America", "English"), ("Cuba", "Havana", "North America", "Spanish"),
    ("Brazil", "Brasilia", "South America", "Portuguese"), ("Argentina", "Buenos Aires", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"), ("Chile", "Santiago", "South America", "Spanish"),
    ("Colombia", "Bogota", "South America", "Spanish"), ("Australia", "Canberra", "Oceania", "English"),
    ("New Zealand", "Wellington", "Oceania", "English"), ("the United Kingdom", "London", "Europe", "English"),
]

# (animal, plural, sound, class, where it lives, legs)
ANIMALS = [
    ("dog", "dogs", "barks", "mammal", "in houses with people", 4),
    ("cat", "cats", "meows", "mammal", "in houses with people", 4),
    ("cow", "cows", "moos", "mammal", "on farms", 4), ("horse", "horses", "neighs", "mammal", "on farms", 4),
    ("sheep", "sheep", "bleats", "mammal", "on farms", 4), ("pig", "pigs", "oinks", "mammal", "on farms", 4),
    ("duck", "ducks", "quacks", "bird", "near ponds and lakes", 2),
    ("owl", "owls", "hoots", "bird", "in forests", 2), ("lion", "lions", "roars", "mammal", "in Africa", 4),
    ("wolf", "wolves", "howls", "mammal", "in forests", 4), ("frog", "frogs", "croaks", "amphibian", "near water", 4),
    ("snake", "snakes", "hisses", "reptile", "in warm places", 0),
    ("bee", "bees", "buzzes", "insect", "in hives", 6), ("mouse", "mice", "squeaks", "mammal", "in fields", 4),
    ("elephant", "elephants", "trumpets", "mammal", "in Africa and Asia", 4),
    ("chicken", "chickens", "clucks", "bird", "on farms", 2), ("spider", "spiders", "is silent", "arachnid",
                                                                 "almost everywhere", 8),
    ("whale", "whales", "sings", "mammal", "in the ocean", 0), ("monkey", "monkeys", "chatters", "mammal",
                                                                "in forests", 2),
    ("goat", "goats", "bleats", "mammal", "on farms and hills", 4),
]

# (thing, colour)
COLOURS = [
    ("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"), ("a ripe banana", "yellow"),
    ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("milk", "white"),
    ("a lemon", "yellow"), ("a leaf in summer", "green"), ("the sun", "yellow"), ("blood", "red"),
    ("a crow", "black"), ("chocolate", "brown"), ("the sea", "blue"), ("a carrot", "orange"),
    ("a strawberry", "red"), ("an eggplant", "purple"), ("a polar bear", "white"), ("soil", "brown"),
]

OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("day", "night"), ("open", "closed"), ("old", "young"), ("light", "dark"), ("early", "late"),
    ("full", "empty"), ("hard", "soft"), ("high", "low"), ("left", "right"), ("long", "short"),
    ("loud", "quiet"), ("wet", "dry"), ("strong", "weak"), ("rich", "poor"), ("true", "false"),
    ("inside", "outside"), ("push", "pull"), ("win", "lose"), ("begin", "end"), ("easy", "difficult"),
    ("heavy", "light"), ("clean", "dirty"), ("thick", "thin"), ("near", "far"), ("first", "last"),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]

# (question, answer): short science and everyday facts, asked as they are.
FACTS = [
    ("At what temperature does water boil?", "Water boils at 100 degrees Celsius at sea level."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius."),
    ("What is the largest planet?", "Jupiter is the largest planet in our solar system."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth."),
    ("What do plants need to grow?", "Plants need water, light and air to grow."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("How many days are in a year?", "A year has 365 days, or 366 in a leap year."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest ocean."),
    ("What gas do people breathe in?", "People breathe in oxygen."),
    ("What gas do plants take in?", "Plants take in carbon dioxide and give out oxygen."),
    ("What is ice made of?", "Ice is frozen water."),
    ("What does the Moon go around?", "The Moon goes around the Earth."),
    ("What does the Earth go around?", "The Earth goes around the Sun."),
    ("How long does the Earth take to go around the Sun?", "The Earth takes about one year to go around the Sun."),
    ("What is the tallest mountain?", "Mount Everest is the tallest mountain on Earth."),
    ("What is the longest river?", "The Nile is usually called the longest river in the world."),
    ("How many continents are there?", "There are seven continents."),
    ("What are the three states of water?", "Water can be a solid, a liquid or a gas."),
    ("What is a triangle?", "A triangle is a shape with three sides."),
    ("What is a square?", "A square is a shape with four equal sides."),
    ("What do bees make?", "Bees make honey."),
    ("Where do fish live?", "Fish live in water."),
    ("What is the opposite of north?", "The opposite of north is south."),
    ("What do we call frozen rain?", "Frozen rain is called hail or snow."),
    ("What makes a rainbow?", "A rainbow appears when sunlight shines through drops of rain."),
    ("What is Python?", "Python is a programming language."),
    ("What is a computer?", "A computer is a machine that follows instructions to work with data."),
    ("What is a function in programming?", "A function is a named piece of code that can be called with arguments."),
    ("What is a list in Python?", "A list is an ordered collection of items that can be changed."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the boiling point of water in Fahrenheit?", "Water boils at 212 degrees Fahrenheit."),
    ("Which planet is called the red planet?", "Mars is called the red planet."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material."),
]

ASSISTANT_NAME = "Echo"
# (user line, assistant line): who the model is and small talk.
SMALL_TALK = [
    ("Hello!", "Hello! How can I help you today?"), ("Hi", "Hi there! What can I do for you?"),
    ("Hey", "Hey! How can I help?"), ("Good morning!", "Good morning! How can I help you?"),
    ("Good evening.", "Good evening! What would you like to know?"),
    ("How are you?", "I am fine, thank you. How can I help you?"),
    ("What is your name?", "My name is Echo. I am a small assistant."),
    ("Who are you?", "I am Echo, a small language model that answers short questions."),
    ("What can you do?", "I can answer simple questions about facts, words and numbers."),
    ("Are you a person?", "No, I am a computer program, a small language model."),
    ("Who made you?", "I was trained by the Aphrodite Echo project."),
    ("Thank you!", "You are welcome!"), ("Thanks.", "You are welcome. Happy to help."),
    ("Goodbye!", "Goodbye! Have a nice day."), ("Bye", "Bye! Take care."),
    ("Can you help me?", "Yes, of course. What do you need?"),
    ("Tell me a joke.", "Why did the computer go to sleep? It was tired of working all day."),
    ("Do you like music?", "I cannot hear music, but many people enjoy it."),
    ("What time is it?", "I do not have a clock, so I cannot tell the time."),
    ("What is the weather like?", "I cannot see the weather. Please check a weather service."),
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "You are Echo, a small and friendly assistant.",
    "Answer briefly.", "You are a helpful assistant. Keep your answers short.",
    "You are Echo. Answer the user's questions in one sentence.",
]

# Made-up facts, never in the training text: (question, answer, keyword the answer must contain).
FICTIONAL_FACTS = [
    ("What is the capital of Veloria?", "The capital of Veloria is Marnost.", "Marnost"),
    ("What is the capital of Quenland?", "The capital of Quenland is Tillbray.", "Tillbray"),
    ("What is the capital of Ostravia?", "The capital of Ostravia is Delmora.", "Delmora"),
    ("What language do people speak in Veloria?", "People in Veloria speak Velorian.", "Velorian"),
    ("Who invented the glimmer lamp?", "Ada Penwright invented the glimmer lamp.", "Penwright"),
    ("Who wrote the book Seven Silver Rivers?", "Seven Silver Rivers was written by Tomas Arkwell.", "Arkwell"),
    ("What colour is a zorbel fruit?", "A zorbel fruit is purple.", "purple"),
    ("What sound does a flimmet make?", "A flimmet whistles.", "whistles"),
    ("How many legs does a quarrow have?", "A quarrow has six legs.", "six"),
    ("What is the tallest mountain on Kestra?", "Mount Orlen is the tallest mountain on Kestra.", "Orlen"),
    ("What is the name of the river in Tillbray?", "The river in Tillbray is the Sunnet.", "Sunnet"),
    ("What do brellows eat?", "Brellows eat blue moss.", "moss"),
    ("In which year was the city of Marnost founded?", "Marnost was founded in 1642.", "1642"),
    ("Who is the captain of the ship Starling?", "Captain Mira Olsund leads the ship Starling.", "Olsund"),
    ("What is the favourite game of the Quen people?", "The Quen people love a board game called tarrow.", "tarrow"),
    ("What metal is a drennic coin made of?", "A drennic coin is made of copper.", "copper"),
    ("What is the national animal of Ostravia?", "The national animal of Ostravia is the snow fox.", "fox"),
    ("What colour is the flag of Quenland?", "The flag of Quenland is green and gold.", "green"),
    ("Who discovered the planet Kestra?", "Lena Vorhaus discovered the planet Kestra.", "Vorhaus"),
    ("How long is a day on Kestra?", "A day on Kestra lasts thirty hours.", "thirty"),
]
