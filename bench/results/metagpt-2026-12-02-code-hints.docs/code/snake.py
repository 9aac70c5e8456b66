## snake.py
import pygame
import tkinter as tk

class Snake:
    def __init__(self):
        self.head = pygame.Rect(100, 100, 10, 10)
        self.body = [self.head]
        self.direction = 'RIGHT'
        self.update()

    def move(self):
        if self.direction == 'RIGHT':
            self.head.x += 10
        elif self.direction == 'LEFT':
            self.head.x -= 10
        elif self.direction == 'UP':
            self.head.y -= 10
        elif self.direction == 'DOWN':
            self.head.y += 10

    def check_collision(self):
        if self.head.x < 0 or self.head.x > 800 or self.head.y < 0 or self.head.y > 600:
            return True
        for segment in self.body[1:]:
            if segment.colliderect(self.head):
                return True
        return False

    def update(self):
        self.body.insert(0, self.head)
        if self.check_collision():
            return True
        self.head.x += 10
        self.head.y += 10

class UI:
    def __init__(self):
        self.root = tk.Tk()
        self.canvas = tk.Canvas(self.root, width=800, height=600)
        self.start_button = tk.Button(self.root, text="Start", command=self.start_game)
        self.level_selector = tk.OptionMenu(self.root, self.select_level, "Level 1", "Level 2", "Level 3")
        self.restart_button = tk.Button(self.root, text="Restart", command=self.restart_game)
        self.create_ui()
        self.start_game()

    def create_ui(self):
        self.canvas.pack()
        self.start_button.pack()
        self.level_selector.pack()
        self.restart_button.pack()

    def start_game(self):
        self.snake = Snake()
        self.ui.update()
        self.root.mainloop()

    def select_level(self):
        selected_level = self.level_selector.get()
        self.restart_game()

    def restart_game(self):
        self.snake = Snake()
        self.ui.update()
        self.root.mainloop()

if __name__ == "__main__":
    main()
