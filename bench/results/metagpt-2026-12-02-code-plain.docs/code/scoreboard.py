## scoreboard.py
import pygame

# Constants for the game
SCREEN_SIZE = (800, 600)
SNAKE_SPEED = 5
FOOD_POSITION = (100, 100)
SCOREBOARD_SCORE = 0
DIFFICULTY = 1

# Default values for constants
DEFAULT_SNAKE_SPEED = SNAKE_SPEED
DEFAULT_FOOD_POSITION = FOOD_POSITION
DEFAULT_SCOREBOARD_SCORE = SCOREBOARD_SCORE
DEFAULT_DIFFICULTY = DIFFICULTY

# Class to represent the scoreboard
class Scoreboard:
    def __init__(self, score):
        self.score = score

    def update(self, score: int):
        self.score = score

    def display(self):
        print(f"Score: {self.score}")

# Class to represent the settings
class Settings:
    def __init__(self, difficulty):
        self.difficulty = difficulty

    def select_difficulty(self, difficulty: int):
        self.difficulty = difficulty

# Class to represent the game
class Game:
    def __init__(self):
        self.snake = Snake([Point(100, 100)], DEFAULT_SNAKE_SPEED)
        self.food = Food(random_position())
        self.scoreboard = Scoreboard(0)
        self.settings = Settings(DEFAULT_DIFFICULTY)

    def start(self):
        while True:
            self.settings.select_difficulty(self.settings.difficulty)
            self.settings.display()
            self.settings.update(self.settings.difficulty)
            self.settings.check_collision()
            self.snake.move()
            self.food.random_position()
            self.scoreboard.update(self.scoreboard.score)
            self.scoreboard.display()
            if self.scoreboard.score == 100:
                print("Congratulations! You've won the game!")
                break
            if self.settings.difficulty == 1:
                print("You've lost the game! Better luck next time!")
                break
