## ui.py
import pygame
import tkinter as tk

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
